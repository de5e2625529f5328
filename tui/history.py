"""What the history panel draws: the pool, throughput, the queue and spills over the last minutes,
one bucket of ``BUCKET_S`` seconds per bar, as btop draws its graphs.

Bookkeeping only (UI thread): ``observe`` takes each engine stats snapshot as it arrives, and
``series`` lays the buckets out up to now. Stats come only when something changes, so a gap
is filled as what it means: the pool and the queue kept their last value, no tokens were
generated and nothing was spilled.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from engine.owner_messages import EngineStats

BUCKET_S = 5.0
MAX_BUCKETS = 120  # ten minutes of five-second bars
Kind = Literal["gauge", "rate"]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    label: str
    kind: Kind  # gauge: the peak of the bucket, carried over gaps; rate: a count per second, 0 over gaps
    per_s: float = 1.0  # a rate's unit in seconds: 60 counts it a minute


METRICS = (
    Metric("pool", "pool", "gauge"),  # blocks used
    Metric("tok_s", "tok/s", "rate"),
    Metric("queue", "queued", "gauge"),
    Metric("spills", "spill/m", "rate", per_s=60.0),
)


class PanelHistory:
    """Buckets of each metric in ``METRICS``, newest last, up to ``MAX_BUCKETS``."""

    def __init__(self) -> None:
        self._buckets: dict[str, deque[tuple[int, float]]] = {m.name: deque(maxlen=MAX_BUCKETS) for m in METRICS}
        self._counters: dict[str, int] | None = None  # last totals seen, for the rates
        self._first_s: float | None = None

    def observe(self, stats: EngineStats, now_s: float) -> None:
        state, bucket = stats.telemetry, int(now_s // BUCKET_S)
        if self._first_s is None:
            self._first_s = now_s
        counters = {"tok_s": state.tokens_generated, "spills": state.evictions}
        previous, self._counters = self._counters, counters
        self._gauge("pool", bucket, stats.pool.used_blocks())
        self._gauge("queue", bucket, stats.num_queued)
        for name, total in counters.items():
            self._add(name, bucket, max(total - previous[name], 0) if previous is not None else 0)

    def series(self, name: str, now_s: float, count: int) -> list[float]:
        """The last ``count`` buckets up to ``now_s`` (fewer since the first stats), as rates per
        second (spills: per minute) or gauges."""
        if self._first_s is None or count <= 0:
            return []
        metric = next(m for m in METRICS if m.name == name)
        last = int(now_s // BUCKET_S)
        first = max(int(self._first_s // BUCKET_S), last - count + 1)
        known = dict(self._buckets[name])
        values, carried = [], 0.0
        earlier = [v for b, v in self._buckets[name] if b < first]
        if metric.kind == "gauge" and earlier:
            carried = earlier[-1]
        for bucket in range(first, last + 1):
            if metric.kind == "gauge":
                carried = known.get(bucket, carried)
                values.append(carried)
            else:
                values.append(self._rate(metric, known.get(bucket, 0.0), bucket, now_s))
        return values

    def _rate(self, metric: Metric, count: float, bucket: int, now_s: float) -> float:
        start = max(bucket * BUCKET_S, self._first_s or 0.0)
        span = min((bucket + 1) * BUCKET_S, now_s) - start  # the bucket under way: its seconds so far
        return count / max(span, 1.0) * metric.per_s

    def _gauge(self, name: str, bucket: int, value: float) -> None:
        buckets = self._buckets[name]
        if buckets and buckets[-1][0] == bucket:
            buckets[-1] = (bucket, max(buckets[-1][1], value))
        else:
            buckets.append((bucket, float(value)))

    def _add(self, name: str, bucket: int, count: float) -> None:
        buckets = self._buckets[name]
        if buckets and buckets[-1][0] == bucket:
            buckets[-1] = (bucket, buckets[-1][1] + count)
        elif count or not buckets:
            buckets.append((bucket, float(count)))


def figure(value: float) -> str:
    """A figure in at most five characters: 7.4, 42, 1.2k."""
    if not math.isfinite(value):
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.1f}" if 0 < value < 10 and value != int(value) else f"{value:.0f}"
