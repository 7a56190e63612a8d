"""The backtest engine: numba kernels over aligned bar matrices, numpy in and numpy out."""
