"""The "latest state" the UI reads: kept up to date incrementally, summarised lazily.

``StateAggregator.update`` is O(1) per event and runs under the recorder's
lock; ``StateAggregator.raw`` copies the small windows out, and
``build_state`` turns that copy into stats outside the lock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .events import (
    CopyOnWrite,
    EngineStep,
    Fork,
    PrefixLookup,
    Event,
    Eviction,
    Preemption,
    Restore,
    Gather,
    PoolSnapshotEvent,
    RequestFinished,
    RequestSubmitted,
    Scatter,
)
from .stats import EMPTY_STATS, LatencyStats, latency_stats

# Bounds the throughput window even if a buggy engine publishes millions of steps/s.
_MAX_RATE_STEPS = 65_536


@dataclass(frozen=True, slots=True)
class SharingStats:
    """Prefix cache and block sharing since the start (or the last reset).

    ``hit_rate`` is reused / looked-up prompt tokens, as vLLM's
    ``prefix_cache_hits / prefix_cache_queries``.
    """

    prompt_tokens: int = 0  # prompt tokens of fresh contexts that looked for a prefix
    reused_tokens: int = 0  # of those, tokens served from shared or cached blocks
    num_lookups: int = 0
    num_hits: int = 0
    cow_blocks: int = 0
    cow_bytes: int = 0
    forks: int = 0

    @property
    def hit_rate(self) -> float | None:
        return self.reused_tokens / self.prompt_tokens if self.prompt_tokens else None

    def add(self, event: PrefixLookup | CopyOnWrite | Fork) -> SharingStats:
        match event:
            case PrefixLookup():
                return _replace(self, prompt_tokens=self.prompt_tokens + event.prompt_tokens,
                                reused_tokens=self.reused_tokens + event.reused_tokens,
                                num_lookups=self.num_lookups + 1,
                                num_hits=self.num_hits + (event.reused_tokens > 0))
            case CopyOnWrite():
                return _replace(self, cow_blocks=self.cow_blocks + event.num_blocks,
                                cow_bytes=self.cow_bytes + event.num_bytes)
            case Fork():
                return _replace(self, forks=self.forks + 1)


def _replace(stats: SharingStats, **changes: int) -> SharingStats:
    fields = {name: getattr(stats, name) for name in SharingStats.__slots__}
    return SharingStats(**(fields | changes))


@dataclass(frozen=True, slots=True)
class TelemetryState:
    """An immutable picture of recent telemetry, cheap to hand to the UI thread."""

    gather: LatencyStats = EMPTY_STATS  # over the window (gather_ms), not every gather
    gather_ms: tuple[float, ...] = ()
    last_gather: Gather | None = None
    gathers_total: int = 0  # every gather since start (or reset), beyond the window
    tokens_generated: int = 0  # by every step since start (or reset): rates over any span come from it
    scatter: LatencyStats = EMPTY_STATS
    scatter_ms: tuple[float, ...] = ()
    last_scatter: Scatter | None = None
    step: LatencyStats = EMPTY_STATS
    step_ms: tuple[float, ...] = ()
    last_step: EngineStep | None = None
    tokens_per_s: float | None = None
    ttft: LatencyStats = EMPTY_STATS
    decode_tok_s: LatencyStats = EMPTY_STATS
    requests_submitted: int = 0
    requests_finished: int = 0
    requests_failed: int = 0
    evictions: int = 0
    preemptions: int = 0
    restores: int = 0
    restores_from_disk: int = 0  # the rest of ``restores`` re-read their tokens (a spill file was unusable)
    last_pool: PoolSnapshotEvent | None = None
    event_count: int = 0
    sharing: SharingStats = SharingStats()


@dataclass(frozen=True, slots=True)
class RawState:
    """Copied windows and counters; the input of ``build_state``."""

    gather_ms: tuple[float, ...]
    scatter_ms: tuple[float, ...]
    step_ms: tuple[float, ...]
    ttft_ms: tuple[float, ...]
    decode_tok_s: tuple[float, ...]
    tokens_per_s: float | None
    last_gather: Gather | None
    last_scatter: Scatter | None
    last_step: EngineStep | None
    last_pool: PoolSnapshotEvent | None
    requests_submitted: int
    requests_finished: int
    requests_failed: int
    evictions: int
    preemptions: int
    restores: int
    event_count: int
    sharing: SharingStats = SharingStats()
    gathers_total: int = 0
    restores_from_disk: int = 0
    tokens_generated: int = 0


class StateAggregator:
    """Rolling windows and counters; not thread-safe on its own (the Recorder locks)."""

    def __init__(self, *, window: int, rate_window_s: float) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not rate_window_s > 0:
            raise ValueError(f"rate_window_s must be > 0, got {rate_window_s}")
        self.window = window
        self.rate_window_s = rate_window_s
        self.reset()

    def reset(self) -> None:
        self.gather_ms: deque[float] = deque(maxlen=self.window)
        self.scatter_ms: deque[float] = deque(maxlen=self.window)
        self.step_ms: deque[float] = deque(maxlen=self.window)
        self.ttft_ms: deque[float] = deque(maxlen=self.window)
        self.decode_tok_s: deque[float] = deque(maxlen=self.window)
        # (end ts, tokens generated, ms) of the steps inside the throughput window,
        # with a running token sum so state() never walks the deque.
        self.rate_steps: deque[tuple[float, int, float]] = deque()
        self.rate_tokens = 0
        self.newest_step_ts: float | None = None
        self.last_gather: Gather | None = None
        self.last_scatter: Scatter | None = None
        self.last_step: EngineStep | None = None
        self.last_pool: PoolSnapshotEvent | None = None
        self.requests_submitted = 0
        self.requests_finished = 0
        self.requests_failed = 0
        self.evictions = 0
        self.preemptions = 0
        self.restores = 0
        self.restores_from_disk = 0
        self.gathers_total = 0
        self.tokens_generated = 0
        self.event_count = 0
        self.sharing = SharingStats()

    def update(self, event: Event) -> None:
        self.event_count += 1
        match event:
            case Gather():
                self.gather_ms.append(event.ms)
                self.last_gather = event
                self.gathers_total += 1
            case Scatter():
                self.scatter_ms.append(event.ms)
                self.last_scatter = event
            case EngineStep():
                self._add_step(event)
            case RequestSubmitted():
                self.requests_submitted += 1
            case RequestFinished():
                self._add_finished(event)
            case Eviction():
                self.evictions += 1
            case Preemption():
                self.preemptions += 1
            case Restore():
                self.restores += 1
                self.restores_from_disk += event.source == "disk"
            case PoolSnapshotEvent():
                self.last_pool = event
            case PrefixLookup() | CopyOnWrite() | Fork():
                self.sharing = self.sharing.add(event)

    def _add_step(self, step: EngineStep) -> None:
        self.step_ms.append(step.ms)
        self.last_step = step
        self.rate_steps.append((step.ts, step.tokens_generated, step.ms))
        self.rate_tokens += step.tokens_generated
        self.tokens_generated += step.tokens_generated
        # Anchor the window at the newest step, not the wall clock, so a replayed
        # log gives the same number as the live run did.
        if self.newest_step_ts is None or step.ts > self.newest_step_ts:
            self.newest_step_ts = step.ts
        cutoff = self.newest_step_ts - self.rate_window_s
        while self.rate_steps and (
            self.rate_steps[0][0] < cutoff or len(self.rate_steps) > _MAX_RATE_STEPS
        ):
            self.rate_tokens -= self.rate_steps.popleft()[1]

    def _add_finished(self, done: RequestFinished) -> None:
        self.requests_finished += 1
        if done.error is not None:
            self.requests_failed += 1
        if done.ttft_ms is not None:
            self.ttft_ms.append(done.ttft_ms)
        if done.decode_tok_s is not None:
            self.decode_tok_s.append(done.decode_tok_s)

    def _tokens_per_s(self) -> float | None:
        """Generated tokens over the wall time from the first step's start to the newest step's end.

        Wall time, not summed step time, so work between steps (gather, scatter,
        scheduling) lowers the number as it lowers real throughput.
        """
        if self.newest_step_ts is None or not self.rate_steps:
            return None
        first_ts, _, first_ms = self.rate_steps[0]
        span_s = self.newest_step_ts - (first_ts - first_ms / 1000.0)
        return self.rate_tokens / span_s if span_s > 0 else None

    def raw(self) -> RawState:
        return RawState(
            gather_ms=tuple(self.gather_ms),
            scatter_ms=tuple(self.scatter_ms),
            step_ms=tuple(self.step_ms),
            ttft_ms=tuple(self.ttft_ms),
            decode_tok_s=tuple(self.decode_tok_s),
            tokens_per_s=self._tokens_per_s(),
            last_gather=self.last_gather,
            last_scatter=self.last_scatter,
            last_step=self.last_step,
            last_pool=self.last_pool,
            requests_submitted=self.requests_submitted,
            requests_finished=self.requests_finished,
            requests_failed=self.requests_failed,
            evictions=self.evictions,
            preemptions=self.preemptions,
            restores=self.restores,
            event_count=self.event_count,
            sharing=self.sharing,
            gathers_total=self.gathers_total,
            restores_from_disk=self.restores_from_disk,
            tokens_generated=self.tokens_generated,
        )


def build_state(raw: RawState) -> TelemetryState:
    return TelemetryState(
        gather=latency_stats(raw.gather_ms),
        gather_ms=raw.gather_ms,
        last_gather=raw.last_gather,
        scatter=latency_stats(raw.scatter_ms),
        scatter_ms=raw.scatter_ms,
        last_scatter=raw.last_scatter,
        step=latency_stats(raw.step_ms),
        step_ms=raw.step_ms,
        last_step=raw.last_step,
        tokens_per_s=raw.tokens_per_s,
        ttft=latency_stats(raw.ttft_ms),
        decode_tok_s=latency_stats(raw.decode_tok_s),
        requests_submitted=raw.requests_submitted,
        requests_finished=raw.requests_finished,
        requests_failed=raw.requests_failed,
        evictions=raw.evictions,
        preemptions=raw.preemptions,
        restores=raw.restores,
        restores_from_disk=raw.restores_from_disk,
        gathers_total=raw.gathers_total,
        tokens_generated=raw.tokens_generated,
        last_pool=raw.last_pool,
        event_count=raw.event_count,
        sharing=raw.sharing,
    )
