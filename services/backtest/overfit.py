"""Overfitting statistics of a parameter search: the winner's Deflated Sharpe Ratio, the PBO,
and their reading.

Every figure uses the Sharpe ratio that picks the winner: per-bar EXCESS returns (the bar
return less ``risk_free_rate / periods_per_year``). The sweeps leave each trial's sums of
raw returns and of their squares (``SweepResult.blocks``); ``excess_sums`` shifts them.

The Deflated Sharpe Ratio (Bailey & Lopez de Prado, 2014) is the PSR of the winner's Sharpe
against SR0, the Sharpe the best of the search's trials would show by luck alone:

* ``deflated_sharpe_ratio`` (the headline): SR0 = sqrt(V0) * E[max of N_eff], where V0 is the
  sampling variance of the Sharpe estimator (Bailey & Lopez de Prado's standard error with the
  winner's skewness and kurtosis, at the winner's Sharpe) and N_eff the EFFECTIVE number of
  independent trials: the number of independent standard normals whose expected maximum
  equals that of normals correlated as the trials' returns are. The correlation is measured
  on the bar returns of a bounded, evenly spaced sample of the trials (rerun; /optimize keeps
  no trials x bars matrix): at most ``MAX_SAMPLE`` trials and the winner, at most
  ``MAX_SAMPLE_TRIAL_BARS`` trial-bars. When the search has more trials than the sample,
  N_eff is scaled by the ratio of the participation ratios k / (1 + (k - 1) q) of the whole
  search and of the sample (q: the mean squared correlation between distinct trials, less
  its 1/T noise floor): 1 for a dense grid of look-alike trials, k / m for independent ones
  (an estimate: AAPL's 175-pair SMA grid gives 8.5 from 65 sampled trials, 10.9 from all).
  The correlation's sample, its matrices and the draws are bounded (65 x 65, 1,000 x 65).
* ``cross_trial_dsr`` (the paper's variant): V0 is the variance of the trials' Sharpe ratios
  across the search and N the raw number of trials. That variance is large exactly when some
  parameters truly work, so this figure cannot see a real edge found by a grid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special
from threadpoolctl import ThreadpoolController

from services.backtest.metrics import (
    EULER_GAMMA,
    _moments,
    pbo_from_blocks,
    psr_from_moments,
    sharpe_from_sums,
)

MAX_SAMPLE = 64  # trials rerun for their returns' correlation
MAX_SAMPLE_TRIAL_BARS = 4_000_000  # and at most this many trial-bars (32 MB of returns)
MC_DRAWS = 2000  # draws (1,000 antithetic pairs) of the correlated normals' maximum
# The matrices are small (<= 65 x 65): one BLAS thread does them in milliseconds, while
# BLAS's thread team, beside the sweeps' own threads on a busy machine, took 30x longer.
_BLAS = ThreadpoolController()
SIGNIFICANT = 0.95


def excess_sums(
    s1: np.ndarray, s2: np.ndarray, n: int | np.ndarray, rf: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the sums of excess returns and of their squares from raw sums over n bars."""
    return s1 - n * rf, s2 - 2.0 * rf * s1 + n * rf * rf


def sharpe_variance(sr: float, n: int, skew: float, kurt: float) -> float:
    """Return the variance of a per-bar Sharpe estimate over n bars (Bailey & Lopez de Prado).

    (1 - skew * SR + (kurt - 1) / 4 * SR^2) / (n - 1), kurtosis not in excess; 1 / (n - 1)
    for normal returns at SR 0.
    """
    if n < 2:
        return float("nan")
    return max(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr, 0.0) / (n - 1)


def expected_max_z(n_trials: float) -> float:
    """Return E[max] of ``n_trials`` independent standard normals (the paper's approximation).

    Continuous in ``n_trials`` (>= 1); 0 for one trial (and wherever the approximation dips
    below 0 just above 1).
    """
    if n_trials <= 1.0:
        return 0.0
    z1 = special.ndtri(1.0 - 1.0 / n_trials)
    z2 = special.ndtri(1.0 - 1.0 / (n_trials * math.e))
    return max(0.0, float((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def trials_for_max(target: float, upper: float) -> float:
    """Return the N in [1, upper] whose ``expected_max_z`` is ``target`` (bisection)."""
    if target <= 1e-9:
        return 1.0
    if expected_max_z(upper) <= target:
        return upper
    lo, hi = 1.0, upper
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if expected_max_z(mid) < target:
            lo = mid
        else:
            hi = mid
    return hi


def sample_indices(k: int, n_bars: int, keep: int) -> np.ndarray:
    """Return the trials to rerun for the correlation: evenly spaced, ``keep`` among them."""
    cap = max(2, min(MAX_SAMPLE, MAX_SAMPLE_TRIAL_BARS // max(1, n_bars)))
    if k <= cap:
        return np.arange(k)
    idx = np.unique(np.linspace(0, k - 1, cap).round().astype(np.int64))
    return np.union1d(idx, [keep])


@dataclass(frozen=True)
class Effective:
    """The effective number of independent trials, and what it came from."""

    n_effective: float
    sampled: int  # trials whose returns gave the correlation (with variance)
    mean_sq_correlation: float  # q, noise floor removed


def effective_trials(sample_returns: np.ndarray, k: int, seed: int = 0) -> Effective:
    """Return the effective number of independent trials among ``k``, from a sample's returns.

    ``sample_returns`` (m, n_bars): bar returns of m of the k trials (evenly spaced over the
    search). E[max] of normals with the sample's correlation is drawn (``MC_DRAWS``, seeded)
    and inverted through ``expected_max_z``; then scaled to k trials (see the module).
    """
    r = np.asarray(sample_returns, dtype=np.float64)
    r = r[np.ptp(r, axis=1) > 0] if r.size else r.reshape(0, 0)
    m = int(r.shape[0])
    if m < 2:
        return Effective(1.0, m, 0.0)
    n = int(r.shape[1])
    with _BLAS.limit(limits=1, user_api="blas"):
        return _effective(r, m, n, k, seed)


@functools.lru_cache(maxsize=8)
def _normals(m: int, seed: int) -> np.ndarray:
    """Return the seeded standard normals of the expected-maximum draws (read-only)."""
    g = np.random.default_rng(seed).standard_normal((MC_DRAWS // 2, m))
    g.flags.writeable = False
    return g


def _effective(r: np.ndarray, m: int, n: int, k: int, seed: int) -> Effective:
    """Return ``effective_trials`` of m trials of n bars with variance (r: their returns)."""
    corr = np.corrcoef(r)
    corr = np.nan_to_num((corr + corr.T) / 2.0, nan=0.0)
    np.fill_diagonal(corr, 1.0)
    lam, vec = np.linalg.eigh(corr)
    root = vec * np.sqrt(np.where(lam > 1e-9 * m, lam, 0.0))  # rounding is no variance
    draws = _normals(m, seed) @ root.T
    e_max = (draws.max(axis=1).mean() - draws.min(axis=1).mean()) / 2.0  # antithetic pairs
    n_sample = trials_for_max(float(e_max), float(m))
    off = corr[~np.eye(m, dtype=bool)]
    q = max(0.0, float(np.mean(off * off)) - 1.0 / n)
    n_eff = n_sample
    if k > m:
        ratio = (k / (1.0 + (k - 1) * q)) / (m / (1.0 + (m - 1) * q))
        n_eff = min(float(k), n_sample * max(1.0, ratio))
    return Effective(n_eff, m, q)


@dataclass(frozen=True)
class Deflation:
    """The winner's Deflated Sharpe Ratio and its inputs (per-bar Sharpe ratios)."""

    deflated_sharpe_ratio: float
    sharpe: float  # the winner's per-bar excess-return Sharpe
    n_trials: int
    effective_trials: float
    sampled_trials: int
    threshold_sharpe: float  # SR0: the expected best per-bar Sharpe of the null
    sharpe_variance: float  # V0: the null variance of the Sharpe estimator
    bars: int
    skewness: float
    kurtosis: float
    cross_trial_dsr: float  # the paper's variant: cross-trial variance, raw trial count
    cross_trial_threshold_sharpe: float
    cross_trial_variance: float


def deflate(
    trial_sharpes: np.ndarray, winner_excess: np.ndarray, sample_returns: np.ndarray
) -> Deflation:
    """Return the DSR of the winner (both variants) from every trial's per-bar excess Sharpe,
    the winner's excess bar returns and a sample of trials' bar returns."""
    srs = np.asarray(trial_sharpes, dtype=np.float64)
    k = int(srs.shape[0])
    x = np.asarray(winner_excess, dtype=np.float64)
    n = int(x.shape[0])
    sr, skew, kurt = _moments(x)
    v0 = sharpe_variance(sr, n, skew, kurt)
    eff = effective_trials(sample_returns, k)
    sr0 = math.sqrt(v0) * expected_max_z(eff.n_effective)
    cross_var = float(np.var(srs, ddof=1)) if k > 1 else 0.0
    cross_sr0 = math.sqrt(cross_var) * expected_max_z(k)
    return Deflation(
        deflated_sharpe_ratio=psr_from_moments(sr, sr0, n, skew, kurt),
        sharpe=sr,
        n_trials=k,
        effective_trials=eff.n_effective,
        sampled_trials=eff.sampled,
        threshold_sharpe=sr0,
        sharpe_variance=v0,
        bars=n,
        skewness=skew,
        kurtosis=kurt,
        cross_trial_dsr=psr_from_moments(sr, cross_sr0, n, skew, kurt),
        cross_trial_threshold_sharpe=cross_sr0,
        cross_trial_variance=cross_var,
    )


def trial_sharpes(blocks: np.ndarray, n_bars: int, rf: float) -> np.ndarray:
    """Return every trial's per-bar excess Sharpe from the sweep's block sums (k, 2, S + 1)."""
    totals = blocks.sum(axis=2)
    s1, s2 = excess_sums(totals[:, 0], totals[:, 1], n_bars, rf)
    return sharpe_from_sums(s1, s2, n_bars)


def pbo_excess(
    blocks: np.ndarray,
    n_bars: int,
    splits: int,
    rf: float,
    between_chunks: Callable[[], None] | None = None,
) -> float:
    """Return the PBO by CSCV ranking trials on their excess Sharpe in each half
    (``between_chunks``: called between chunks of splits, e.g. a cancellation check)."""
    size = n_bars // splits
    b1, b2 = excess_sums(blocks[:, 0, 1:], blocks[:, 1, 1:], size, rf)
    return pbo_from_blocks(b1, b2, size, between_chunks)[0]


def pbo_split_count(splits: int) -> int:
    """Return how many CSCV splits S blocks give: C(S, S/2)."""
    return math.comb(splits, splits // 2)


def reading(
    dsr: Deflation | None, pbo: float | None, splits: int, profitable: int, n_trials: int
) -> str:
    """Return what DSR and PBO say, as two separate questions.

    DSR: is the best Sharpe more than the luck of ``n_trials``? PBO: does picking the
    in-sample best beat picking any trial out of sample? "Likely overfitted" is the headline
    only when both say no and not every trial is profitable.
    """
    d = None if dsr is None else dsr.deflated_sharpe_ratio
    d_txt = "n/a" if d is None or not math.isfinite(d) else f"{d:.2f}"
    real = d is not None and math.isfinite(d) and d >= SIGNIFICANT
    if dsr is None:
        luck = "DSR n/a (too few bars or no variance)"
    elif real:
        luck = (
            f"the best Sharpe is more than luck: DSR {d_txt} >= {SIGNIFICANT} against the best "
            f"of {dsr.effective_trials:.1f} effective independent trials "
            f"(of {n_trials:,})"
        )
    else:
        luck = (
            f"the best Sharpe is within what luck gives the best of "
            f"{dsr.effective_trials:.1f} effective independent trials (of {n_trials:,}): "
            f"DSR {d_txt} < {SIGNIFICANT}"
        )
    every = profitable == n_trials and n_trials > 0
    share = f"{profitable:,} of {n_trials:,} trials have a positive excess Sharpe"
    if pbo is None:
        pick = "PBO n/a (too few trials or bars for CSCV)"
    elif pbo > 0.5:
        pick = (
            f"picking the in-sample best does not help: PBO {pbo:.2f} > 0.5 (it ranks at or "
            f"below the out-of-sample median in {pbo:.0%} of {pbo_split_count(splits):,} "
            f"splits); {share}"
        )
    else:
        pick = (
            f"picking the in-sample best carries over: PBO {pbo:.2f} <= 0.5 over "
            f"{pbo_split_count(splits):,} splits; {share}"
        )
    if real and pbo is not None and pbo <= 0.5:
        head = "Edge survives the search"
    elif real:
        head = "Edge survives the search, the choice of parameters does not"
    elif pbo is not None and pbo > 0.5 and not every:
        head = "Likely overfitted"
    else:
        head = "Not significant"
    return f"{head}: {luck}; {pick}."
