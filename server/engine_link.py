"""The server's side of the engine's owner thread (``engine.owner_thread``): it routes each event to
its request's asyncio queue (one hand-over per request per step, not per token), and feeds the
Prometheus metrics and the ``/v1/events`` hub.

``on_event`` runs on the owner thread; ``Route.sink`` hands an event to the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from engine.factory import EngineFactory
from engine.owner_messages import (
    EngineFailed,
    EngineLoading,
    EngineReady,
    EngineStats,
    OwnerEvent,
    RequestAccepted,
    RequestEnded,
    RequestRefused,
    TelemetryBatch,
    TokensGenerated,
)
from engine.owner_thread import EngineOwner
from telemetry import Event, Recorder

from .jobs import Finished, TextChunk
from .metrics import ServerMetrics

if TYPE_CHECKING:
    from engine.batch_engine import BlockPoolBatchEngine
    from pool import PoolSnapshot

logger = logging.getLogger(__name__)
ENGINE_GONE = "the engine failed; see the server log"
# What a request's stream receives: the owner's RequestAccepted / RequestRefused, then
# TextChunk pieces and one Finished.
StreamEvent = RequestAccepted | RequestRefused | TextChunk | Finished
Sink = Callable[[StreamEvent], None]


@dataclass(eq=False)
class Route:
    """Where one request's events go, and what its metrics need."""

    sink: Sink
    prompt_tokens: int
    arrived_s: float  # time.monotonic() when the request came in (TTFT counts from here, like vLLM)
    cached_tokens: int = 0
    first_token_s: float | None = None
    last_token_s: float | None = None


class EngineLink:
    """Starts the owner thread (``start``) and keeps the routes of the requests in flight."""

    def __init__(self, *, factory: EngineFactory, metrics: ServerMetrics, max_conversations: int,
                 on_events: Callable[[list[Event]], None] | None = None,
                 on_loading: Callable[[str, float], None] | None = None) -> None:
        self.metrics = metrics
        self.ready = threading.Event()  # set once the engine is built (or failed: see ``error``)
        self.error: str | None = None
        self._on_events = on_events
        self._on_loading = on_loading
        self._routes: dict[int, Route] = {}  # request id -> route; set on the event loop, read here
        self.owner = EngineOwner(factory=factory, on_event=self.on_event, recorder=Recorder(history=1_000),
                                 max_conversations=max_conversations, telemetry_events=True,
                                 name="blockpool-serve-engine")

    def start(self) -> None:
        self.owner.start()

    def open(self, request_id: int, route: Route) -> None:
        """Route ``request_id``'s events to ``route`` (before its Submit is sent)."""
        self._routes[request_id] = route

    def close(self, request_id: int) -> None:
        """The reader left: its request's events go nowhere from now on (its metrics still count)."""
        if (route := self._routes.get(request_id)) is not None:
            route.sink = _nowhere

    # -- the owner thread ------------------------------------------------------------------

    def on_event(self, event: OwnerEvent) -> None:
        match event:
            case EngineLoading(text=text, fraction=fraction) if self._on_loading is not None:
                self._on_loading(text, fraction)
            case EngineReady():
                self.ready.set()
            case EngineFailed(error=error, request_ids=lost):
                if self.owner.engine is None and not self.ready.is_set():
                    self.error = error  # the first build failed: the server must not start
                    self.ready.set()
                for request_id in lost:
                    self._fail(request_id, error)
            case RequestAccepted(request_id=request_id, cached_tokens=cached):
                if (route := self._routes.get(request_id)) is not None:
                    route.cached_tokens = cached
                    self.metrics.on_started(route.prompt_tokens)
                    _send(route, event)
            case RequestRefused(request_id=request_id):
                if (route := self._routes.pop(request_id, None)) is not None:
                    _send(route, event)
            case TokensGenerated():
                self._on_tokens(event, time.monotonic())
            case RequestEnded():
                self._on_ended(event, time.monotonic())
            case EngineStats(pool=snap, num_active=running, num_queued=waiting):
                self._figures(snap, running=running, waiting=waiting)
            case TelemetryBatch(events=events):
                self.metrics.on_events(events)
                if self._on_events is not None:
                    self._on_events(list(events))

    def _on_tokens(self, step: TokensGenerated, now: float) -> None:
        for request_id, count in step.num_tokens.items():
            route = self._routes.get(request_id)
            if route is None or route.sink is _nowhere:
                continue
            ttft = now - route.arrived_s if route.first_token_s is None else None
            itl = (now - route.last_token_s) / count if route.last_token_s is not None else None
            route.first_token_s = route.first_token_s or now
            route.last_token_s = now
            self.metrics.on_tokens(count, ttft_s=ttft, itl_s=itl)
            if text := step.text.get(request_id):
                _send(route, TextChunk(text, count))

    def _on_ended(self, ended: RequestEnded, now: float) -> None:
        route = self._routes.pop(ended.request_id, None)
        if route is None:
            return
        self.metrics.on_finished(ended.finish_reason, now - route.arrived_s)
        if route.sink is _nowhere:
            return  # dropped: nobody reads it
        # A fresh agent may still have been served from shared blocks (a prefix hit): the engine knows.
        cached = max(route.cached_tokens, ended.cached_tokens)
        self.metrics.on_cached(cached)
        _send(route, Finished(ended.text, ended.finish_reason, route.prompt_tokens, cached,  # type: ignore[arg-type]
                              ended.generated_tokens, ended.error))

    def _fail(self, request_id: int, error: str) -> None:
        if (route := self._routes.pop(request_id, None)) is not None:
            _send(route, Finished("", "error", route.prompt_tokens, route.cached_tokens, 0, f"{error}; {ENGINE_GONE}"))

    def scrape(self, owner: EngineOwner) -> bytes:
        """The /metrics body, the pool and queue figures taken now (an ``Inspect`` before each scrape)."""
        engine = cast("BlockPoolBatchEngine", owner.engine)
        self._figures(engine.pool.snapshot(), running=engine.num_active, waiting=engine.num_queued)
        return self.metrics.render()

    def _figures(self, snap: PoolSnapshot, *, running: int, waiting: int) -> None:
        self.metrics.on_engine(running=running, waiting=waiting, used_blocks=snap.used_blocks(),
                               total_blocks=snap.total_blocks)
        used_by_type = dict.fromkeys(snap.layer_types, 0)
        for block in snap.blocks:
            used_by_type[snap.layer_types[block.layer_id]] += 1
        self.metrics.on_pool(used_by_type=used_by_type, free_blocks=snap.free_blocks(),
                             total_blocks=snap.total_blocks, idle=len(self.owner.requests.conversations))


def _send(route: Route, event: StreamEvent) -> None:
    try:
        route.sink(event)
    except RuntimeError:  # the server's event loop has closed (shutdown): nobody is listening
        pass


def _nowhere(event: StreamEvent) -> None:
    """The sink of a request whose reader has gone."""
