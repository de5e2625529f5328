"""The engine thread: owns the engine, steps it, and posts what happened to the app.

The UI sends commands over a ``queue.Queue``; this thread applies them between
steps and never touches a widget. Each step becomes one ``TokensGenerated``
message; pool and telemetry snapshots go out a few times a second at most.

An exception anywhere in a step or a command ends every turn in flight with the
error (``EngineFailed(restarting=True)``), then the engine is rebuilt and every
agent's last known context re-adopted (restored from its spill file when the old
engine could still save it). On stop, ``close()`` saves resident contexts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from telemetry import Recorder

from tui.engine_text import decode_context, describe, renderer
from tui.messages import (
    AdoptContext,
    CancelTurn,
    CloseAgent,
    Command,
    ContextAdopted,
    EngineFailed,
    EngineReady,
    EngineStats,
    ForkAgent,
    Forked,
    ForkFailed,
    ModelLoading,
    Post,
    RequestFailed,
    RequestFinished,
    Submitted,
    SubmitFailed,
    SubmitTurn,
    TokensGenerated,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


class Engine(Protocol):
    """What the worker needs of ``engine.BlockPoolBatchEngine`` (or a scripted stand-in)."""

    tokenizer: Any
    pool: Any

    def submit(self, agent_id: str, prompt: str, cache: Any = None, max_tokens: int = 256, *,
               temperature: float = 0.0) -> int: ...
    def step_once(self) -> Any: ...
    def has_work(self) -> bool: ...
    def cancel(self, uid: int) -> None: ...
    def close_agent(self, agent_id: str) -> None: ...
    def close(self) -> Any: ...
    def adopt(self, agent_id: str, token_ids: Any) -> Any: ...
    def agent_blocks(self, agent_id: str) -> Any: ...
    def spilled_agents(self) -> set[str]: ...
    @property
    def num_queued(self) -> int: ...
    @property
    def num_active(self) -> int: ...


# Builds the engine on the engine thread: factory(progress, recorder) -> engine.
EngineFactory = Callable[[Progress, Recorder], Engine]


class EngineWorker(threading.Thread):
    """Runs ``factory``'s engine until ``stop()``; see the module docstring."""

    STATS_INTERVAL_S = 0.25
    IDLE_WAIT_S = 0.05
    MAX_REBUILDS = 3  # in a row without a good step: then the failure is final

    def __init__(self, *, factory: EngineFactory, post: Post, recorder: Recorder) -> None:
        super().__init__(name="blockpool-engine", daemon=True)
        self.commands: queue.Queue[Command | None] = queue.Queue()
        self._factory = factory
        self._post = post
        self.recorder = recorder
        self._stop_event = threading.Event()
        self._engine: Engine | None = None
        self._uid_by_agent: dict[str, int] = {}  # the unfinished turn of each agent
        self._agent_ids: set[str] = set()
        self._contexts: dict[str, tuple[int, ...]] = {}  # each agent's last known context, to re-adopt
        self._rebuilds = 0
        self._applying: Command | None = None  # the command being applied, should it fail
        self._eos_ids: frozenset[int] = frozenset()
        self._dirty = True
        self._last_stats_s = 0.0
        self.stats_interval_s = self.STATS_INTERVAL_S  # the app's refresh setting; a float, safe to set from it
        self.finished_s: float | None = None  # time.monotonic() when the thread ended

    @property
    def engine(self) -> Engine | None:
        """The engine once built (for tests and benchmarks: only this thread may call it)."""
        return self._engine

    # -- called from the UI thread ---------------------------------------------

    def send(self, command: Command) -> None:
        self.commands.put(command)

    def request_stop(self) -> None:
        """Ask the thread to stop after the current step, without waiting."""
        self._stop_event.set()
        self.commands.put(None)  # wakes a thread blocked on the queue

    def stop(self, timeout_s: float = 1.0) -> float | None:
        """Ask the thread to stop after the current step; seconds it took, or None if still running."""
        started = time.monotonic()
        self.request_stop()
        if self.is_alive():
            self.join(timeout_s)
        return None if self.is_alive() else time.monotonic() - started

    # -- the engine thread -----------------------------------------------------

    def run(self) -> None:
        from engine.owner import share_the_gil  # here: importing the app loads no MLX (BLAS re-exec)

        share_the_gil()
        engine = None
        try:
            engine = self._build()
            while engine is not None and not self._stop_event.is_set():
                try:
                    self._loop(engine)
                except Exception as exc:  # anywhere in a step: end the turns, rebuild, go on
                    logger.exception("engine step failed")
                    engine = self._rebuild(engine, exc)
        except Exception as exc:  # a bug, not a user error: say so instead of dying silently
            logger.exception("engine thread failed")
            self._post(EngineFailed(f"engine stopped: {type(exc).__name__}: {exc}"))
        finally:
            self._close(engine)
            self.finished_s = time.monotonic()

    def _close(self, engine: Engine | None) -> None:
        """Save resident contexts (the engine's ``close``); a failure here must not hide the first one."""
        close = getattr(engine, "close", None)  # a scripted stand-in may have none
        if close is None:
            return
        try:
            close()
        except Exception:
            logger.exception("closing the engine failed; contexts not saved are re-prefilled next time")

    def _rebuild(self, old: Engine, exc: Exception) -> Engine | None:
        """After a failed step: end every turn in flight, build a new engine, re-adopt contexts."""
        self._rebuilds += 1
        final = self._rebuilds > self.MAX_REBUILDS
        error = f"engine error: {type(exc).__name__}: {exc}"
        lost = set(self._uid_by_agent)
        if isinstance(self._applying, SubmitTurn):  # failed before the engine gave it a uid
            lost.add(self._applying.agent_id)
        self._post(EngineFailed(error, restarting=not final, agent_ids=tuple(sorted(lost))))
        self._uid_by_agent.clear()
        self._applying = None
        self._close(old)  # saves what it still can, so the new engine restores instead of prefilling
        self._engine = None
        if final:
            return None
        engine = self._build()
        if engine is None:
            return None
        for agent_id, token_ids in self._contexts.items():
            if token_ids and agent_id in self._agent_ids:
                self._adopt(engine, agent_id, token_ids)
        return engine

    def _build(self) -> Engine | None:
        def progress(text: str, fraction: float) -> None:
            self._post(ModelLoading(text, fraction))

        try:
            engine = self._factory(progress, self.recorder)
        except Exception as exc:  # ModelLoadError, a bad pool size, a broken model file...
            self._post(EngineFailed(str(exc)))
            return None
        self._engine = engine
        tokenizer = engine.tokenizer
        self._eos_ids = frozenset(getattr(tokenizer, "eos_token_ids", ()) or ())
        self._post(EngineReady(describe(engine), renderer(tokenizer), tokenizer.eos_token or ""))
        return engine

    def _loop(self, engine: Engine) -> None:
        while not self._stop_event.is_set():
            self._drain(engine, block=not engine.has_work())
            if self._stop_event.is_set():
                break
            if engine.has_work():
                self._publish(engine.step_once())
                self._rebuilds = 0
                self._dirty = True
            self._post_stats(engine)

    def _drain(self, engine: Engine, *, block: bool) -> None:
        try:
            command = self.commands.get(timeout=self.IDLE_WAIT_S) if block else self.commands.get_nowait()
        except queue.Empty:
            return
        while command is not None:
            self._applying = command
            self._apply(engine, command)
            self._applying = None
            self._dirty = True
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return

    def _apply(self, engine: Engine, command: Command) -> None:
        match command:
            case SubmitTurn():
                self._submit(engine, command)
            case CancelTurn(agent_id=agent_id):
                uid = self._uid_by_agent.get(agent_id)
                if uid is not None:
                    engine.cancel(uid)
            case CloseAgent(agent_id=agent_id):
                engine.close_agent(agent_id)
                self._agent_ids.discard(agent_id)
                self._contexts.pop(agent_id, None)
            case AdoptContext(agent_id=agent_id, token_ids=token_ids):
                self._agent_ids.add(agent_id)
                self._adopt(engine, agent_id, token_ids)
            case ForkAgent():
                self._fork(engine, command)

    def _fork(self, engine: Engine, command: ForkAgent) -> None:
        """A refused fork (busy source, no context, an engine that cannot fork) is told, not raised."""
        from pool import PoolExhausted  # lazy: importing pool loads MLX, which must wait for the BLAS re-exec
        fork = getattr(engine, "fork", None)  # a remote engine has none
        if fork is None:
            self._post(ForkFailed(command.source_agent_id, command.agent_id, "this engine cannot share blocks"))
            return
        try:
            blocks = fork(command.source_agent_id, command.agent_id)
        except (ValueError, PoolExhausted) as exc:
            self._post(ForkFailed(command.source_agent_id, command.agent_id, str(exc)))
            return
        self._agent_ids.add(command.agent_id)
        self._contexts[command.agent_id] = tuple(blocks.token_ids)
        self._post(Forked(command.source_agent_id, command.agent_id, blocks.total_tokens, blocks.num_blocks()))

    def _adopt(self, engine: Engine, agent_id: str, token_ids: tuple[int, ...]) -> None:
        engine.adopt(agent_id, token_ids)
        self._contexts[agent_id] = token_ids
        self._post(ContextAdopted(agent_id, decode_context(engine.tokenizer, token_ids), len(token_ids)))

    def _submit(self, engine: Engine, command: SubmitTurn) -> None:
        cache = engine.agent_blocks(command.agent_id) if command.continues else None
        if command.continues and cache is None:
            error = "the agent's context is gone; send again to start a fresh one"
            self._post(SubmitFailed(command.agent_id, command.text, error))
            return
        try:
            uid = engine.submit(command.agent_id, command.prompt, cache, command.max_tokens,
                                temperature=command.temperature)
        except ValueError as exc:
            self._post(SubmitFailed(command.agent_id, command.text, str(exc)))
            return
        self._uid_by_agent[command.agent_id] = uid
        self._agent_ids.add(command.agent_id)
        self._post(Submitted(command.agent_id, uid))

    def _publish(self, out: Any) -> None:
        text: dict[str, str] = {}
        num_tokens: dict[str, int] = {}
        for delta in out.deltas:
            text[delta.agent_id] = text.get(delta.agent_id, "") + delta.text
            num_tokens[delta.agent_id] = num_tokens.get(delta.agent_id, 0) + 1
        prefill = {p.agent_id: (p.processed, p.total) for p in out.prefill}
        if out.deltas or prefill:
            self._post(TokensGenerated(text, prefill, num_tokens))
        for completion in out.completions:
            self._report(completion)

    def _report(self, completion: Any) -> None:
        if self._uid_by_agent.get(completion.agent_id) == completion.uid:
            del self._uid_by_agent[completion.agent_id]
        context_tokens = completion.blocks.total_tokens if completion.blocks is not None else 0
        if completion.blocks is not None:
            self._contexts[completion.agent_id] = tuple(completion.blocks.token_ids)
        if completion.finish_reason == "error":
            self._post(RequestFailed(completion.agent_id, completion.uid, completion.error or "unknown error",
                                     context_tokens))
            return
        ids = completion.token_ids
        context_ids = tuple(completion.blocks.token_ids) if completion.blocks is not None else ()
        self._post(RequestFinished(
            completion.agent_id, completion.uid, completion.text, completion.finish_reason,
            completion.cached_tokens, completion.prompt_tokens, completion.generated_tokens,
            context_tokens, bool(ids) and ids[-1] in self._eos_ids, completion.decode_tok_s, context_ids,
        ))

    def _post_stats(self, engine: Engine) -> None:
        now = time.monotonic()
        idle = not engine.has_work()
        if not self._dirty or (not idle and now - self._last_stats_s < self.stats_interval_s):
            return
        self._dirty = False
        self._last_stats_s = now
        context_tokens = {}
        for agent_id in self._agent_ids:
            blocks = engine.agent_blocks(agent_id)
            context_tokens[agent_id] = blocks.total_tokens if blocks is not None else 0
        self._post(EngineStats(engine.pool.snapshot(), self.recorder.state(), engine.num_queued,
                               engine.num_active, context_tokens, frozenset(engine.spilled_agents())))
