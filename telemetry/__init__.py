"""Telemetry for the block-pool engine: typed events, a thread-safe recorder, stats, logs.

A leaf package: pool, engine and tui publish into it; nothing here imports them.
"""

from __future__ import annotations

from .events import (
    EVENT_KINDS,
    EVENT_TYPES,
    BlocksAllocated,
    BlocksFreed,
    BlocksShared,
    CopyOnWrite,
    Fork,
    PrefixLookup,
    EngineStep,
    Event,
    Eviction,
    Preemption,
    Restore,
    Gather,
    PoolSnapshotEvent,
    RequestFinished,
    RequestSubmitted,
    Scatter,
    parse_event,
)
from .export import (
    EventReader,
    JsonlWriter,
    read_events,
    replay,
    summarize,
    write_csv_summary,
)
from .recorder import NullRecorder, Recorder, Subscriber
from .state import SharingStats, TelemetryState
from .stats import (
    EMPTY_STATS,
    Histogram,
    LatencyStats,
    RollingWindow,
    histogram,
    latency_stats,
    text_histogram,
)

__all__ = [
    "EMPTY_STATS",
    "EVENT_KINDS",
    "EVENT_TYPES",
    "BlocksAllocated",
    "BlocksFreed",
    "BlocksShared",
    "CopyOnWrite",
    "Fork",
    "PrefixLookup",
    "EngineStep",
    "Event",
    "EventReader",
    "Eviction",
    "Preemption",
    "Restore",
    "Gather",
    "Histogram",
    "JsonlWriter",
    "LatencyStats",
    "NullRecorder",
    "PoolSnapshotEvent",
    "Recorder",
    "RequestFinished",
    "RequestSubmitted",
    "RollingWindow",
    "Scatter",
    "Subscriber",
    "SharingStats",
    "TelemetryState",
    "histogram",
    "latency_stats",
    "parse_event",
    "read_events",
    "replay",
    "summarize",
    "text_histogram",
    "write_csv_summary",
]
