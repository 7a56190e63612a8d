"""The backtest engine: numba kernels over aligned bar matrices, numpy in and numpy out.

* ``core``: the portfolio event loop (``simulate_nb``) and its rules, the ``SimSpec`` record.
* ``fast``: the same rules for one symbol in registers, with statistics (what sweeps run).
* ``sweep``: ``prange`` kernels over many trials; ``montecarlo``: bootstrap kernels.
* ``signals``: target-position kernels (crossovers, mean reversion, four boolean rules).
* ``postfix``: a postfix program over bar series, the glue of a written strategy's rules
  that each trial of its sweep runs.
* ``runner`` / ``analysis``: the thin Python wrappers (``Bars``, ``make_spec``, ``simulate``,
  ``sweep_crossover``, ``sweep_targets``, ``sweep_rules``, ``monte_carlo``).
"""
