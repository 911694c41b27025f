"""Log-bucketed histograms of durations: what the hourly rollup of charge rows keeps
instead of every queue wait and run time, so a month's percentiles are read from a few
thousand small histograms instead of sorting a few hundred thousand values.

Bin ``i`` holds the values in ``(GAMMA**(i-1), GAMMA**i]`` and stands for
``2 * GAMMA**i / (GAMMA + 1)``, which is within ``RELATIVE_ERROR`` of every value in it
(DDSketch's construction). A percentile interpolates, as PostgreSQL's
``percentile_cont`` does, between the representatives of the two closest ranks, so it is
within ``RELATIVE_ERROR`` of the exact ``percentile_cont`` of the same values. Values
of ``ZERO_BELOW`` seconds or less (a request started the moment it was queued) fall in
one bin that stands for 0. Histograms merge by adding counts of equal bins, so hours
add up to days and months exactly as the values would have.

A histogram travels as bytes (the rollup's column): little-endian int32 pairs
``bin, count``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

#: a percentile is within 1% of the exact one
RELATIVE_ERROR = 0.01
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(GAMMA)
#: values at or below this many seconds count as 0
ZERO_BELOW = 1e-6
#: the bin of values counted as 0 (below every real bin: ZERO_BELOW's is about -691)
ZERO_BIN = -(2**31)
_PAIRS = np.dtype("<i4")


def bins_of(values: Iterable[float]) -> np.ndarray:
    """Each value's bin (int64)."""
    array = np.fromiter(values, dtype=np.float64)
    out = np.full(array.shape, ZERO_BIN, dtype=np.int64)
    positive = array > ZERO_BELOW
    out[positive] = np.ceil(np.log(array[positive]) / _LOG_GAMMA)
    return out


def encode(bins: np.ndarray, counts: np.ndarray | None = None) -> bytes:
    """A histogram's bytes: ``bins`` with their ``counts`` (None: one each), equal bins
    added."""
    if counts is None:
        counts = np.ones(bins.shape, dtype=np.int64)
    if not len(bins):
        return b""
    unique, inverse = np.unique(bins, return_inverse=True)
    summed = np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)
    return np.column_stack((unique, summed)).astype(_PAIRS).tobytes()


def decode(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Bins and counts of several histograms together (unmerged; equal bins repeat)."""
    pairs = np.frombuffer(b"".join(blobs), dtype=_PAIRS).reshape(-1, 2)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def merge(*blobs: bytes) -> bytes:
    """One histogram of all of them."""
    return encode(*decode(blobs))


def representative(bin_: int) -> float:
    """The value a bin stands for."""
    return 0.0 if bin_ == ZERO_BIN else 2.0 * math.exp(bin_ * _LOG_GAMMA) / (GAMMA + 1)


def percentiles(bins: np.ndarray, counts: np.ndarray, quantiles: Sequence[float]) -> tuple[float | None, ...]:
    """``percentile_cont`` of the values the (possibly repeated) bins hold, each within
    ``RELATIVE_ERROR``; None for an empty histogram. Equal bins are added into a dense
    array over the bins' span (a month's cells merge in one ``bincount``)."""
    zero = bins == ZERO_BIN
    zeros = int(counts[zero].sum()) if zero.any() else 0
    real, weights = bins[~zero], counts[~zero]
    total = zeros + (int(weights.sum()) if len(weights) else 0)
    if total == 0:
        return tuple(None for _ in quantiles)
    low = int(real.min()) if len(real) else 0
    cumulative = np.cumsum(np.bincount(real - low, weights=weights)) + zeros if len(real) else np.array([], dtype=np.float64)
    positions = [q * (total - 1) for q in quantiles]
    at: list[float] = []
    for p in positions:
        for rank in (int(p), min(int(p) + 1, total - 1)):
            # the value at 0-based rank r: in the zero bin, or the first bin whose cumulative count exceeds r
            at.append(0.0 if rank < zeros else representative(low + int(np.searchsorted(cumulative, rank, side="right"))))
    return tuple(at[2 * i] + (at[2 * i + 1] - at[2 * i]) * (p - int(p)) for i, p in enumerate(positions))
