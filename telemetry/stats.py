"""Latency summaries, fixed-edge histograms and a thread-safe rolling window.

Percentiles use numpy.percentile's default ``'linear'`` method: for sorted
samples ``x[0..n-1]`` the q-th percentile sits at fractional rank
``r = q/100 * (n-1)`` and is ``x[floor(r)] + (r - floor(r)) * (x[ceil(r)] - x[floor(r)])``.
So ``[1, 2, 3, 4]`` has p50 = 2.5 and p95 = 3.85. ``std`` is the population
standard deviation (ddof=0), like ``numpy.std``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_PERCENTILES = (50.0, 95.0, 99.0)


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Summary of a window of samples; every field but count is None when empty."""

    count: int
    min: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    std: float | None = None
    max: float | None = None

    @property
    def empty(self) -> bool:
        return self.count == 0


EMPTY_STATS = LatencyStats(count=0)


def _finite_array(samples: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} needs a flat sequence of numbers, got shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        bad = arr[~np.isfinite(arr)][:3].tolist()
        raise ValueError(f"{what} got non-finite samples {bad}; drop them before summarising")
    return arr


def latency_stats(samples: Sequence[float]) -> LatencyStats:
    """Count, min, p50/p95/p99 (linear interpolation), mean, population std, max."""
    arr = _finite_array(samples, "latency_stats")
    if arr.size == 0:
        return EMPTY_STATS
    p50, p95, p99 = (float(p) for p in np.percentile(arr, _PERCENTILES))
    return LatencyStats(
        count=int(arr.size),
        min=float(arr.min()),
        p50=p50,
        p95=p95,
        p99=p99,
        mean=float(arr.mean()),
        std=float(arr.std()),
        max=float(arr.max()),
    )


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per bin between fixed ``edges``; each bin is [lo, hi) except the last, [lo, hi]."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    below: int = 0
    above: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts) + self.below + self.above

    @property
    def num_bins(self) -> int:
        return len(self.counts)


def _check_edges(bins: Sequence[float]) -> np.ndarray:
    edges = _finite_array(bins, "histogram bins")
    if edges.size < 2:
        raise ValueError(f"histogram bins need at least 2 edges, got {list(bins)}")
    if not (np.diff(edges) > 0).all():
        raise ValueError(f"histogram bins must be strictly increasing, got {list(bins)}")
    return edges


def histogram(
    samples: Sequence[float],
    *,
    bins: Sequence[float] | None = None,
    num_bins: int = 10,
) -> Histogram:
    """Bin samples into fixed edges: ``bins`` if given, else ``num_bins`` equal-width bins.

    Auto edges span [min, max] like ``numpy.histogram``: a single repeated
    value gets [v - 0.5, v + 0.5] and empty input gets [0, 1]. Samples outside
    given edges are counted in ``below``/``above`` rather than dropped.
    """
    arr = _finite_array(samples, "histogram")
    if bins is not None:
        edges = _check_edges(bins)
    elif num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    else:
        edges = np.histogram_bin_edges(arr, bins=num_bins)
    counts, _ = np.histogram(arr, bins=edges)
    return Histogram(
        edges=tuple(float(e) for e in edges),
        counts=tuple(int(c) for c in counts),
        below=int((arr < edges[0]).sum()),
        above=int((arr > edges[-1]).sum()),
    )


def text_histogram(hist: Histogram, width: int = 40) -> str:
    """Render one bar line per bin (plus below/above lines when non-zero)."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    peak = max((*hist.counts, hist.below, hist.above, 1))
    labels = [
        f"[{lo:.4g}, {hi:.4g}{']' if i == hist.num_bins - 1 else ')'}"
        for i, (lo, hi) in enumerate(zip(hist.edges, hist.edges[1:]))
    ]
    rows = list(zip(labels, hist.counts))
    if hist.below:
        rows.insert(0, (f"< {hist.edges[0]:.4g}", hist.below))
    if hist.above:
        rows.append((f"> {hist.edges[-1]:.4g}", hist.above))
    label_width = max(len(label) for label, _ in rows)
    count_width = len(str(peak))
    return "\n".join(
        f"{label:>{label_width}} {'█' * round(width * n / peak):<{width}} {n:>{count_width}}"
        for label, n in rows
    )


class RollingWindow:
    """The last ``maxlen`` float samples, safe to add to and read from any thread."""

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError(f"RollingWindow maxlen must be >= 1, got {maxlen}")
        self.maxlen = maxlen
        self._samples: deque[float] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, x: float) -> None:
        if not math.isfinite(x):
            raise ValueError(f"RollingWindow.add got non-finite sample {x!r}")
        with self._lock:
            self._samples.append(float(x))

    def values(self) -> list[float]:
        with self._lock:
            return list(self._samples)

    def stats(self) -> LatencyStats:
        return latency_stats(self.values())

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()

    def __len__(self) -> int:
        return len(self._samples)
