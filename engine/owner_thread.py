"""The engine's one owner thread, for every front end: builds the engine, applies commands between
steps, steps it, and hands what happened to ``on_event`` (nano-vllm's ``step()`` loop; vLLM v1's
EngineCore, serving both ``LLM`` and the API server). No Textual, no FastAPI here.

Commands (``engine.owner_messages``) come from any thread. A command's failure goes back to its
sender (a refused request, a failed fork, an ``Inspect`` future's exception), never out of the
thread. A failure inside a step ends every request in flight (``EngineFailed(restarting=True)``),
then the engine is rebuilt and every open agent's last known context re-adopted (from its spill
file when the old engine could save it); ``MAX_REBUILDS`` failures in a row are final. Stats
go out a few times a second at most; on stop, ``close()`` saves resident contexts.
"""

from __future__ import annotations

import itertools
import logging
import queue
import sys
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

from .owner_messages import (
    Adopt,
    Cancel,
    CloseAgent,
    Command,
    ContextAdopted,
    Drop,
    EngineFailed,
    EngineLoading,
    EngineReady,
    EngineStats,
    ForkAgent,
    Forked,
    ForkFailed,
    Inspect,
    OnEvent,
    OwnerEvent,
    RequestRefused,
    Submit,
    TelemetryBatch,
    Truncate,
)
from .owner_requests import Requests
from .owner_truncate import truncate
from .protocol import render_chat

if TYPE_CHECKING:
    from telemetry import Event, Recorder

    from .factory import EngineFactory
    from .protocol import Engine

logger = logging.getLogger(__name__)
# How long a Python thread may hold the GIL while another waits for it. The owner thread
# drops the GIL in every MLX evaluation and kernel call and must win it back from the UI
# (or server) thread each time: at CPython's default 5 ms a 30-block gather took 23 ms next
# to a busy Python thread, at 0.5 ms 4 ms (8-bit; 7 vs 2 ms for 16-bit, measured). In the
# TUI with 4 agents streaming, keypress p95 was 37-70 ms against 49-62 at 5 ms (3 runs each).
SWITCH_INTERVAL_S = 0.0005


class EngineOwner(threading.Thread):
    """Runs ``factory``'s engine until ``stop()``; see the module docstring.

    Args:
        factory: builds the engine, on this thread (``engine.factory.engine_factory``).
        on_event: takes every event, on this thread; it must hand it over and return.
        recorder: the engine's telemetry, read for the stats.
        max_conversations: idle conversations kept for stateless requests (``Submit`` without
            an agent id); 0 when every request names its agent.
        telemetry_events: also hand over each loop's telemetry events (``TelemetryBatch``).
    """

    STATS_INTERVAL_S = 0.25
    IDLE_WAIT_S = 0.05
    MAX_REBUILDS = 3  # in a row without a good step: then the failure is final

    def __init__(self, *, factory: EngineFactory, on_event: OnEvent, recorder: Recorder,
                 max_conversations: int = 0, telemetry_events: bool = False,
                 name: str = "blockpool-engine") -> None:
        super().__init__(name=name, daemon=True)
        self.inbox: queue.Queue[Command | None] = queue.Queue()
        self.recorder = recorder
        self.requests = Requests(self._emit, max_conversations=max_conversations)
        self.stats_interval_s = self.STATS_INTERVAL_S  # a float: safe to set from another thread
        self._factory = factory
        self._on_event = on_event
        self._stop_event = threading.Event()
        self._request_ids = itertools.count(1)
        self._engine: Engine | None = None
        self._rebuilds = 0
        self._dirty = True
        self._last_stats_s = 0.0
        self._events: list[Event] | None = [] if telemetry_events else None
        if self._events is not None:
            recorder.subscribe(self._events.append)  # the engine publishes on this thread

    @property
    def engine(self) -> Engine | None:
        """The engine once built (only this thread may step it; others may read copies)."""
        return self._engine

    # -- any thread ------------------------------------------------------------------------

    def new_request_id(self) -> int:
        """A request id no other request of this owner has (``next`` on a count: thread-safe)."""
        return next(self._request_ids)

    def send(self, command: Command) -> None:
        self.inbox.put(command)

    def request_stop(self) -> None:
        """Ask the thread to stop after the current step, without waiting."""
        self._stop_event.set()
        self.inbox.put(None)  # wakes a thread waiting on the inbox

    def stop(self, timeout_s: float = 1.0) -> float | None:
        """Ask the thread to stop after the current step; seconds it took, or None if still running."""
        started = time.monotonic()
        self.request_stop()
        if self.is_alive():
            self.join(timeout_s)
        return None if self.is_alive() else time.monotonic() - started

    # -- this thread -----------------------------------------------------------------------

    def run(self) -> None:
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:  # beside the UI's or the server's Python threads
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        engine = None
        try:
            engine = self._build()
            while engine is not None and not self._stop_event.is_set():
                try:
                    self._loop(engine)
                except Exception as exc:  # anywhere in a step: end the requests, rebuild, go on
                    logger.exception("engine step failed")
                    engine = self._rebuild(engine, exc)
        except Exception as exc:  # a bug, not a user error: say so instead of dying silently
            logger.exception("engine thread failed")
            self._emit(EngineFailed(f"engine stopped: {type(exc).__name__}: {exc}",
                                    request_ids=self.requests.lose_all()))
        finally:
            self._close(engine)

    def _build(self) -> Engine | None:
        def progress(text: str, fraction: float) -> None:
            self._emit(EngineLoading(text, fraction))

        try:
            engine = self._factory(progress, self.recorder)
        except Exception as exc:  # ModelLoadError, a bad pool size, a broken model file...
            self._emit(EngineFailed(str(exc)))
            return None
        self._engine = engine
        self.requests.attach(engine)
        tokenizer = engine.tokenizer
        self._emit(EngineReady(partial(render_chat, tokenizer), tokenizer.eos_token or "", engine.pool.snapshot()))
        return engine

    def _rebuild(self, old: Engine, exc: Exception) -> Engine | None:
        """After a failed step: end every request in flight, build a new engine, re-adopt contexts."""
        self._rebuilds += 1
        final = self._rebuilds > self.MAX_REBUILDS
        lost = self.requests.lose_all()
        self._emit(EngineFailed(f"engine error: {type(exc).__name__}: {exc}", restarting=not final,
                                request_ids=lost))
        self._close(old)  # saves what it still can, so the new engine restores instead of prefilling
        self._engine = None
        if final:
            return None
        engine = self._build()
        if engine is None:
            return None
        for agent_id, token_ids in list(self.requests.agents.items()):
            if token_ids:
                self._adopt(engine, Adopt(agent_id, token_ids))
        return engine

    def _close(self, engine: Engine | None) -> None:
        """Save resident contexts (the engine's ``close``); a failure here must not hide the first one."""
        if engine is None:
            return
        try:
            engine.close()
        except Exception:
            logger.exception("closing the engine failed; contexts not saved are re-prefilled next time")

    def _loop(self, engine: Engine) -> None:
        while not self._stop_event.is_set():
            self._drain(engine, block=not engine.has_work())
            if self._stop_event.is_set():
                break
            if engine.has_work():
                self.requests.publish(engine, engine.step_once())
                self._rebuilds = 0
                self._dirty = True
            self._post_stats(engine)
            self._post_telemetry()

    def _drain(self, engine: Engine, *, block: bool) -> None:
        try:
            command = self.inbox.get(timeout=self.IDLE_WAIT_S) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while command is not None:
            self._apply(engine, command)
            self._dirty = True
            try:
                command = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _apply(self, engine: Engine, command: Command) -> None:
        """One command; what fails goes back to its sender (see the module docstring)."""
        try:
            self._dispatch(engine, command)
        except Exception as exc:  # a bug: its sender hears of it, the engine goes on
            logger.exception("command %r failed; the engine goes on", command)
            match command:
                case Submit(request_id=request_id):
                    self._emit(RequestRefused(request_id, f"{type(exc).__name__}: {exc}", "internal"))
                case ForkAgent(source_agent_id=source, agent_id=agent_id):
                    self._emit(ForkFailed(source, agent_id, f"{type(exc).__name__}: {exc}"))

    def _dispatch(self, engine: Engine, command: Command) -> None:
        match command:
            case Submit():
                self.requests.submit(engine, command)
            case Cancel(request_id=request_id):
                self.requests.cancel(engine, request_id)
            case Drop():
                self.requests.drop(engine, command)
            case CloseAgent(agent_id=agent_id):
                self.requests.close_agent(engine, agent_id)
            case Adopt():
                self._adopt(engine, command)
            case ForkAgent():
                self._fork(engine, command)
            case Truncate():
                truncate(engine, command, self.requests, self._emit)
            case Inspect(fn=fn, future=future):
                try:
                    future.set_result(fn(self))
                except Exception as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)

    def _adopt(self, engine: Engine, command: Adopt) -> None:
        blocks = engine.adopt(command.agent_id, command.token_ids)
        self.requests.agents[command.agent_id] = command.token_ids
        text = None
        if blocks is not None:  # None: the engine keeps no context here (a server does)
            text = engine.tokenizer.decode(list(command.token_ids), skip_special_tokens=False,
                                           clean_up_tokenization_spaces=False)
        self._emit(ContextAdopted(command.agent_id, text, len(command.token_ids)))

    def _fork(self, engine: Engine, command: ForkAgent) -> None:
        """A refused fork (busy source, no context, an engine that cannot fork) is told, not raised."""
        source, agent_id = command.source_agent_id, command.agent_id
        if engine.fork is None:
            self._emit(ForkFailed(source, agent_id, "this engine cannot share blocks"))
            return
        from pool import PoolExhausted  # lazy: importing pool loads MLX, and a front end imports this module first

        try:
            blocks = engine.fork(source, agent_id)
        except (ValueError, PoolExhausted) as exc:  # a busy or closed source, no context, no room
            self._emit(ForkFailed(source, agent_id, str(exc)))
            return
        self.requests.agents[agent_id] = tuple(blocks.token_ids)
        self._emit(Forked(source, agent_id, blocks.total_tokens, blocks.num_blocks()))

    def _post_stats(self, engine: Engine) -> None:
        now = time.monotonic()
        idle = not engine.has_work()
        if not self._dirty or (not idle and now - self._last_stats_s < self.stats_interval_s):
            return
        self._dirty = False
        self._last_stats_s = now
        context_tokens = {}
        for agent_id in self.requests.agents:
            blocks = engine.agent_blocks(agent_id)
            context_tokens[agent_id] = blocks.total_tokens if blocks is not None else 0
        self._emit(EngineStats(engine.pool.snapshot(), self.recorder.state(), engine.num_queued,
                               engine.num_active, context_tokens, frozenset(engine.spilled_agents())))

    def _post_telemetry(self) -> None:
        if self._events:
            events, self._events[:] = tuple(self._events), []
            self._emit(TelemetryBatch(events))

    def _emit(self, event: OwnerEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a front end's bug: it loses this event, the engine goes on
            logger.exception("handing over %s failed", type(event).__name__)
