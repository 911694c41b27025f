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
    ``RELATIVE_ERROR``; None for an empty histogram."""
    return percentiles_of_many([(bins, counts)], quantiles)[0]


def percentiles_of_many(histograms: Sequence[tuple[np.ndarray, np.ndarray]], quantiles: Sequence[float]) -> list[tuple[float | None, ...]]:
    """``percentiles`` of each histogram, all at once: one ``bincount`` adds equal bins
    into a dense (histogram x bin) table, and each rank's bin is the count of cumulative
    sums at or below it (a report's few hundred buckets in a few array operations, not
    a sort each)."""
    if not histograms:
        return []
    sizes = [len(bins) for bins, _ in histograms]
    bins = np.concatenate([b for b, _ in histograms]) if sum(sizes) else np.zeros(0, dtype=np.int64)
    counts = np.concatenate([c for _, c in histograms]) if sum(sizes) else np.zeros(0, dtype=np.int64)
    row = np.repeat(np.arange(len(histograms)), sizes)
    zero = bins == ZERO_BIN
    zeros = np.bincount(row[zero], weights=counts[zero], minlength=len(histograms))
    real, weights, rows = bins[~zero], counts[~zero], row[~zero]
    low = int(real.min()) if len(real) else 0
    width = int(real.max()) - low + 1 if len(real) else 1
    dense = np.bincount(rows * width + (real - low), weights=weights, minlength=len(histograms) * width).reshape(len(histograms), width)
    cumulative = np.cumsum(dense, axis=1) + zeros[:, None]
    totals = cumulative[:, -1].astype(np.int64)
    values = []
    for q in quantiles:
        position = q * np.maximum(totals - 1, 0)
        ranks = position.astype(np.int64)
        pair = []
        for rank in (ranks, np.minimum(ranks + 1, np.maximum(totals - 1, 0))):
            # the value at 0-based rank r: in the zero bin, or the first bin whose cumulative count exceeds r
            at = (cumulative <= rank[:, None]).sum(axis=1)
            value = 2.0 * np.exp((low + np.minimum(at, width - 1)) * _LOG_GAMMA) / (GAMMA + 1)
            pair.append(np.where(rank < zeros, 0.0, value))
        values.append(pair[0] + (pair[1] - pair[0]) * (position - ranks))
    return [tuple(None if totals[i] == 0 else float(v[i]) for v in values) for i in range(len(histograms))]
