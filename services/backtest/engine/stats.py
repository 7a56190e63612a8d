"""Numba kernels of the statistics: the bootstrap of a mean, and the CSCV of the PBO.

``bootstrap_means_nb`` draws each resample from its own SplitMix64 stream (Steele, Lea &
Flood, 2014) keyed by the seed and the resample's number, so one seed gives one answer on
any machine, and the draws vectorise: a 2,520-bar series resampled 1,000 times takes about
a millisecond, where numpy's generator in a Python loop took 5-20.

``cscv_logits_nb`` evaluates the combinatorially symmetric cross-validation of a parameter
search from each trial's per-block sums of returns and squared returns, with the same sums
in the same order as numpy's (so the same logits as ``metrics``' numpy version had).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _splitmix_nb(z):
    """Return SplitMix64's output for state ``z`` (a 64-bit mix with full avalanche)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"}, error_model="numpy")
def bootstrap_means_nb(x, n_boot, seed):
    """Return the means of ``n_boot`` resamples of ``x`` drawn with replacement (n_boot,).

    Resample ``b`` reads the SplitMix64 stream that starts at a key mixed from ``seed`` and
    ``b``; each 64-bit output gives two indices by Lemire's multiply-shift (``(u32 * n) >>
    32``: every index within a relative n / 2**32 of probability 1/n).
    """
    n = x.shape[0]
    out = np.empty(n_boot)
    if n == 0:
        out[:] = np.nan
        return out
    nn = np.uint64(n) & _LOW32
    shift = np.uint64(32)
    base = _splitmix_nb(np.uint64(seed) * _GOLDEN)
    pairs = n // 2
    for b in range(n_boot):
        key = _splitmix_nb(base ^ (np.uint64(b) * _MIX2))
        acc = 0.0
        for j in range(pairs):
            z = _splitmix_nb(key + np.uint64(j + 1) * _GOLDEN)
            acc += x[((z & _LOW32) * nn) >> shift] + x[((z >> shift) * nn) >> shift]
        if n % 2:
            z = _splitmix_nb(key)
            acc += x[((z & _LOW32) * nn) >> shift]
        out[b] = acc / n
    return out


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _sharpe_key_nb(s1, s2, n):
    """Return a key that orders Sharpe ratios as they order, from a sum, squares and count.

    Sharpe = (s1 / n) / sqrt((s2 - s1**2 / n) / (n - 1)); for one ``n`` it is ordered as
    sign(s1) * s1**2 / (n * s2 - s1**2): one division, no square root. No variance: 0.
    """
    v = n * s2 - s1 * s1
    return s1 * abs(s1) / v if v > 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _split_sums_nb(bt, idx, out):
    """Write sum(bt[idx], axis=0) into ``out``, added as numpy adds <= 8 values per row.

    numpy sums fewer than 8 values one after the other from 0, and 8 as a pairwise tree.
    """
    h = idx.shape[0]
    if h < 8:
        out[:] = 0.0
        for j in range(h):
            out += bt[idx[j]]
    else:
        out[:] = ((bt[idx[0]] + bt[idx[1]]) + (bt[idx[2]] + bt[idx[3]])) + (
            (bt[idx[4]] + bt[idx[5]]) + (bt[idx[6]] + bt[idx[7]])
        )
        for j in range(8, h):
            out += bt[idx[j]]


@njit(cache=True, nogil=True, error_model="numpy")
def _rank_logit_nb(key_in, key_out):
    """Return the logit of the out-of-sample rank of the in-sample best (first of equals)."""
    k = key_in.shape[0]
    best = np.argmax(key_in)
    chosen = key_out[best]
    below = 0
    ties = 0
    for i in range(k):
        o = key_out[i]
        below += o < chosen
        ties += o == chosen
    w = (below + (ties + 1) / 2.0) / (k + 1.0)
    return math.log(w / (1.0 - w))


@njit(cache=True, nogil=True, error_model="numpy")
def cscv_logits_nb(b1t, b2t, t1, t2, splits, size):
    """Return the CSCV logit of every split (C,).

    ``b1t``, ``b2t`` (S, k): the sums of each trial's returns and of their squares over S
    blocks of ``size`` bars (a row per block); ``t1``, ``t2`` (k,): their totals;
    ``splits`` (C, S/2): the blocks of each in-sample half, in ``itertools.combinations``
    order, where split C - 1 - c is the complement of split c. In each split the trial
    with the best in-sample Sharpe (the first of equals) is ranked by out-of-sample Sharpe
    among all (1 worst, k best, ties averaged), and the logit of rank / (k + 1) is returned.

    A split and its complement swap halves (both halves hold S/2 blocks), so one pass
    over the blocks serves both. Sharpe ratios are compared through ``_sharpe_key_nb``
    (the same order, a fifth of the work).
    """
    k = b1t.shape[1]
    n_splits, h = splits.shape
    half = float(size * h)
    s1 = np.empty(k)
    s2 = np.empty(k)
    key_a = np.empty(k)
    key_b = np.empty(k)
    logits = np.empty(n_splits)
    for c in range(n_splits // 2):
        _split_sums_nb(b1t, splits[c], s1)
        _split_sums_nb(b2t, splits[c], s2)
        for i in range(k):
            key_a[i] = _sharpe_key_nb(s1[i], s2[i], half)
            key_b[i] = _sharpe_key_nb(t1[i] - s1[i], t2[i] - s2[i], half)
        logits[c] = _rank_logit_nb(key_a, key_b)
        logits[n_splits - 1 - c] = _rank_logit_nb(key_b, key_a)
    return logits


@njit(cache=True, nogil=True, error_model="numpy")
def drawdown_episodes_nb(eq):
    """Return (drawdown per point, longest episode in bars, each episode's worst depth).

    ``eq`` is the equity curve with the initial capital in front. An episode runs from a
    peak until the curve is back at or above it (or to the end); its length counts bars
    from the peak to the recovery.
    """
    n = eq.shape[0]
    dd = np.empty(n)
    depths = np.empty(n)
    k = 0
    longest = 0
    start = -1
    worst = 0.0
    peak = -np.inf
    for i in range(n):
        if eq[i] > peak:
            peak = eq[i]
        d = eq[i] / peak - 1.0
        dd[i] = d
        if d < 0.0:
            if start < 0:
                start = i - 1  # the peak bar
                worst = d
            elif d < worst:
                worst = d
        elif start >= 0:
            depths[k] = worst
            k += 1
            longest = max(longest, i - start)
            start = -1
    if start >= 0:
        depths[k] = worst
        k += 1
        longest = max(longest, n - 1 - start)
    return dd, longest, depths[:k]
