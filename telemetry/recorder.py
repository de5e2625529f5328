"""A thread-safe publish/subscribe hub with a bounded event history.

The engine thread publishes; the UI thread reads ``state()`` a few times a
second. The lock is held only for the O(1) append and counter updates, never
while subscribers run or stats are computed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from .events import EVENT_KINDS, EVENT_TYPES, Event
from .state import StateAggregator, TelemetryState, build_state

logger = logging.getLogger(__name__)

Subscriber = Callable[[Event], None]


class Recorder:
    """Keeps the last ``history`` events and a cheap-to-read ``TelemetryState``.

    Args:
        history: How many events the ring buffer keeps.
        window: How many recent samples feed each latency summary.
        rate_window_s: Span of engine steps behind ``tokens_per_s``.
        enabled: When False, ``publish`` returns at once; callers can also skip
            building events with ``if recorder.enabled:``.
    """

    def __init__(
        self,
        history: int = 10_000,
        *,
        window: int = 256,
        rate_window_s: float = 5.0,
        enabled: bool = True,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.history = history
        self.enabled = enabled
        self._lock = threading.Lock()
        self._events: deque[Event] = deque(maxlen=history)
        self._agg = StateAggregator(window=window, rate_window_s=rate_window_s)
        self._version = 0
        self._cached: TelemetryState | None = TelemetryState()
        # Copy-on-write tuple: publish iterates it without taking the lock.
        self._subscribers: tuple[tuple[object, Subscriber], ...] = ()

    def publish(self, event: Event) -> None:
        """Record ``event`` and hand it to every subscriber on the calling thread."""
        if not self.enabled:
            return
        if not isinstance(event, EVENT_TYPES):
            raise TypeError(f"publish expects a telemetry event, got {type(event).__name__}")
        with self._lock:
            self._events.append(event)
            self._agg.update(event)
            self._version += 1
            self._cached = None
        for _, callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                # A broken subscriber (UI gone, disk full) must not stop the engine.
                logger.exception(
                    "telemetry subscriber %r failed on a %s event", callback, event.kind
                )

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every later event; returns an idempotent unsubscribe."""
        if not callable(callback):
            raise TypeError(f"subscribe expects a callable, got {callback!r}")
        token = object()
        with self._lock:
            self._subscribers = (*self._subscribers, (token, callback))

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s[0] is not token)

        return unsubscribe

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscribers)

    def events(self, kind: str | None = None, since: float | None = None) -> list[Event]:
        """A copy of the ring buffer, oldest first; ``since`` keeps events with ``ts >= since``."""
        if kind is not None and kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {sorted(EVENT_KINDS)}")
        with self._lock:
            snapshot = list(self._events)
        return [
            e
            for e in snapshot
            if (kind is None or e.kind == kind) and (since is None or e.ts >= since)
        ]

    def state(self) -> TelemetryState:
        """The latest state; summarised at most once per publish."""
        with self._lock:
            if self._cached is not None:
                return self._cached
            raw, version = self._agg.raw(), self._version
        state = build_state(raw)
        with self._lock:
            # Only cache if no publish slipped in while we summarised.
            if self._version == version:
                self._cached = state
        return state

    def reset(self) -> None:
        """Forget events and state; keeps subscribers and ``enabled``."""
        with self._lock:
            self._events.clear()
            self._agg.reset()
            self._version += 1
            self._cached = TelemetryState()

    def __len__(self) -> int:
        return len(self._events)


class NullRecorder(Recorder):
    """A Recorder that records nothing, for running the engine without telemetry."""

    def __init__(self) -> None:
        super().__init__(history=1, window=1, enabled=False)

    def publish(self, event: Event) -> None:
        return None

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        return _noop


def _noop() -> None:
    return None
