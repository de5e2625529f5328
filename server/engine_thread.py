"""The engine thread: the only thread that touches the engine.

Routes put commands on ``inbox`` (a ``queue.Queue``); between steps this thread
applies them, steps the engine, and hands each request's text to its asyncio
queue through the job's sink (one hand-over per request per step, not per token).
It also keeps the table of idle conversations, so stateless requests continue
the agent whose blocks already hold their history.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from engine.owner import share_the_gil
from telemetry import Event, Recorder

from .conversations import Claim, ConversationTable
from .jobs import Command, Drop, Finished, Inspect, Job, JobEvent, Rejected, Started, Submit, TextChunk
from .metrics import ServerMetrics

logger = logging.getLogger(__name__)

# factory(recorder) -> a BlockPoolBatchEngine; runs on this thread, so MLX state is born here.
EngineFactory = Callable[[Recorder], Any]
EventListener = Callable[[list[Event]], None]


@dataclass(eq=False)
class Running:
    """A submitted job while the engine runs it."""

    job: Job
    uid: int
    agent_id: str
    cached_tokens: int
    first_token_s: float | None = None
    last_token_s: float | None = None
    dropped: bool = False

    def send(self, event: JobEvent) -> None:
        send(self.job, event)


class EngineThread(threading.Thread):
    """Builds the engine with ``factory`` and runs it until ``stop()``; see the module docstring."""

    IDLE_WAIT_S = 0.05
    POOL_STATS_INTERVAL_S = 0.5

    def __init__(self, *, factory: EngineFactory, metrics: ServerMetrics, max_conversations: int,
                 on_events: EventListener | None = None) -> None:
        super().__init__(name="blockpool-serve-engine", daemon=True)
        self.inbox: queue.Queue[Command | None] = queue.Queue()
        self.ready = threading.Event()  # set once the engine is built (or failed: see ``error``)
        self.error: str | None = None
        self.metrics = metrics
        self.recorder = Recorder(history=1_000)
        self.table = ConversationTable(max_conversations)
        self.engine: Any = None  # only this thread may call it
        self._factory = factory
        self._on_events = on_events
        self._events: list[Event] = []
        self.recorder.subscribe(self._events.append)  # called on this thread: the engine publishes here
        self._stop_event = threading.Event()
        self._by_job: dict[int, Running] = {}
        self._by_uid: dict[int, Running] = {}
        self._last_pool_stats_s = 0.0

    # -- any thread ---------------------------------------------------------------------

    def send(self, command: Command) -> None:
        self.inbox.put(command)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop_event.set()
        self.inbox.put(None)
        if self.is_alive():
            self.join(timeout_s)

    # -- this thread ----------------------------------------------------------------------

    @property
    def running(self) -> dict[int, Running]:
        """Jobs in the engine by uid (read it from ``Inspect`` functions)."""
        return self._by_uid

    def run(self) -> None:
        share_the_gil()
        try:
            self.engine = self._factory(self.recorder)
        except Exception as exc:  # a bad model name, a pool too small: the server must not start
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()
            return
        self.ready.set()
        try:
            self._loop()
        except Exception:  # a bug: say so, and fail the jobs instead of hanging their clients
            logger.exception("engine thread failed")
            for running in list(self._by_uid.values()):
                running.send(Finished("", "error", len(running.job.prompt_ids), running.cached_tokens, 0,
                                      "the engine thread failed; see the server log"))
            raise

    def _loop(self) -> None:
        engine = self.engine
        while not self._stop_event.is_set():
            self._drain(block=not engine.has_work())
            if engine.has_work():
                self._dispatch(engine.step_once())
            self._publish_stats()

    def _drain(self, *, block: bool) -> None:
        try:
            command = self.inbox.get(timeout=self.IDLE_WAIT_S) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while command is not None:
            self._apply(command)
            try:
                command = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _apply(self, command: Command) -> None:
        match command:
            case Submit(job=job):
                self._submit(job)
            case Drop(job_id=job_id):
                self._drop(job_id)
            case Inspect(fn=fn, future=future):
                try:
                    future.set_result(fn(self))
                except Exception as exc:  # handed to the awaiting route, which answers 500
                    future.set_exception(exc)

    def _submit(self, job: Job) -> None:
        engine = self.engine
        needed = engine.spec.blocks_for_context(len(job.prompt_ids) + 1)
        if needed > engine.pool.total_blocks:
            send(job, Rejected(
                f"the prompt has {len(job.prompt_ids)} tokens, which need {needed} KV blocks, but the whole "
                f"pool has {engine.pool.total_blocks}; shorten the messages or start the server with a larger "
                "--kv-memory", 400, "context_length_exceeded"))
            return
        claim = self._claim(job)
        cache = engine.agent_blocks(claim.agent_id) if claim.continues else None
        try:
            if job.seed is not None:
                mx.random.seed(job.seed)
            uid = engine.submit(claim.agent_id, list(job.prompt_ids[claim.cached_tokens:]), cache, job.max_tokens,
                                temperature=job.temperature, top_p=job.top_p, stop=job.stop)
        except ValueError as exc:
            self._put_back(claim)
            send(job, Rejected(str(exc), 400, "invalid_request"))
            return
        except Exception:  # one request's failure is its own 500: the thread goes on serving the others
            logger.exception("request %s failed before it ran", job.job_id)
            self._put_back(claim)
            send(job, Rejected("the server failed to start this request; see the server log", 500, "internal_error"))
            return
        running = Running(job, uid, claim.agent_id, claim.cached_tokens)
        self._by_job[job.job_id] = running
        self._by_uid[uid] = running
        self.metrics.on_started(len(job.prompt_ids))
        running.send(Started(len(job.prompt_ids), claim.cached_tokens, claim.agent_id))

    def _claim(self, job: Job) -> Claim:
        claim = self.table.claim(job.prompt_ids)
        if claim.continues and self.engine.agent_blocks(claim.agent_id) is None:
            self.engine.close_agent(claim.agent_id)  # cannot happen while the table is kept right
            return self._claim(job)
        return claim

    def _put_back(self, claim: Claim) -> None:
        """A refused request leaves a continued agent as it was: idle, same context."""
        if claim.continues:
            self._release(claim.agent_id)

    def _drop(self, job_id: int) -> None:
        running = self._by_job.get(job_id)
        if running is None or running.dropped:
            return  # finished already
        running.dropped = True
        # Closing (not just cancelling) frees the blocks now: nobody will continue a reply they never got.
        self.engine.close_agent(running.agent_id)
        self.table.forget(running.agent_id)

    def _dispatch(self, out: Any) -> None:
        now = time.monotonic()
        steps: dict[int, tuple[str, int]] = {}
        for delta in out.deltas:
            text, count = steps.get(delta.uid, ("", 0))
            steps[delta.uid] = (text + delta.text, count + 1)
        for uid, (text, count) in steps.items():
            running = self._by_uid.get(uid)
            if running is not None and not running.dropped:
                self._on_tokens(running, text, count, now)
        for completion in out.completions:
            self._finish(completion, now)

    def _on_tokens(self, running: Running, text: str, count: int, now: float) -> None:
        ttft = now - running.job.arrived_s if running.first_token_s is None else None
        itl = (now - running.last_token_s) / count if running.last_token_s is not None else None
        running.first_token_s = running.first_token_s or now
        running.last_token_s = now
        self.metrics.on_tokens(count, ttft_s=ttft, itl_s=itl)
        if text:
            running.send(TextChunk(text, count))

    def _finish(self, completion: Any, now: float) -> None:
        running = self._by_uid.pop(completion.uid, None)
        if running is None:
            return
        del self._by_job[running.job.job_id]
        self.metrics.on_finished(completion.finish_reason, now - running.job.arrived_s)
        if running.dropped:
            return
        self._release(running.agent_id)
        # A fresh agent may still have been served from shared blocks (a prefix hit): the engine knows.
        cached = max(running.cached_tokens, completion.cached_tokens)
        self.metrics.on_cached(cached)
        running.send(Finished(completion.text, completion.finish_reason, len(running.job.prompt_ids),
                              cached, completion.generated_tokens, completion.error))

    def _release(self, agent_id: str) -> None:
        blocks = self.engine.agent_blocks(agent_id)
        context = blocks.token_ids if blocks is not None else []
        for evicted in self.table.release(agent_id, context):
            self.engine.close_agent(evicted)
        if not context:
            self.engine.close_agent(agent_id)

    def _publish_stats(self) -> None:
        engine = self.engine
        pool = engine.pool
        self.metrics.on_engine(running=engine.num_active, waiting=engine.num_queued,
                               used_blocks=pool.used_blocks(), total_blocks=pool.total_blocks)
        now = time.monotonic()
        if now - self._last_pool_stats_s >= self.POOL_STATS_INTERVAL_S:
            self._last_pool_stats_s = now
            self.publish_pool_stats()
        events, self._events[:] = list(self._events), []
        if events:
            self.metrics.on_events(events)
            if self._on_events is not None:
                self._on_events(events)

    def publish_pool_stats(self) -> None:
        """Per-layer-type block counts into the metrics (also run before each scrape)."""
        pool = self.engine.pool
        layer_types = pool.spec.layer_types
        used_by_type = dict.fromkeys(layer_types, 0)
        for layer_id, used in enumerate(pool.layer_usage()):
            used_by_type[layer_types[layer_id]] += used
        self.metrics.on_pool(used_by_type=used_by_type, free_blocks=pool.free_blocks(),
                             total_blocks=pool.total_blocks, idle=len(self.table))


def send(job: Job, event: JobEvent) -> None:
    try:
        job.sink(event)
    except RuntimeError:  # the server's event loop has closed (shutdown): nobody is listening
        pass
