"""The asyncio side of the engine thread: admission, submit, and one stream per request."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .engine_thread import EngineThread
from .errors import APIError
from .jobs import Drop, Finished, Inspect, Job, JobEvent, Rejected, Started, Submit, TextChunk

DISCONNECT_POLL_S = 0.5
RETRY_AFTER_S = 1


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None


class EngineClient:
    """Talks to the engine thread for the routes; lives on the event loop's thread."""

    def __init__(self, thread: EngineThread, *, capacity: int) -> None:
        self.thread = thread
        self.capacity = capacity  # requests running or waiting at once; more get 429
        self.in_flight = 0  # changed on the event loop's thread only
        self._job_ids = itertools.count(1)

    async def start(self, prompt_ids: list[int], sampling: Sampling) -> Stream:
        """Submit a request and wait until the engine took it (or refused it: APIError)."""
        if not self.thread.is_alive():
            raise APIError(503, "the engine thread is not running; see the server log", code="engine_down")
        if self.in_flight >= self.capacity:
            raise APIError(429, f"{self.in_flight} requests are running or waiting, the limit (--max-queue plus "
                                f"the batch) is {self.capacity}; retry in {RETRY_AFTER_S} s",
                           code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
        stream = Stream(self, tuple(prompt_ids), sampling, asyncio.get_running_loop())
        try:
            first = await stream.next_event()
        except BaseException:  # the client went away before the engine answered
            stream.close()
            raise
        if isinstance(first, Rejected):
            raise APIError(first.status, first.message, param="messages", code=first.code)
        assert isinstance(first, Started)
        stream.started = first
        return stream

    def next_job_id(self) -> int:
        return next(self._job_ids)

    async def inspect(self, fn: Callable[[EngineThread], Any]) -> Any:
        """``fn(thread)`` run on the engine thread between steps."""
        if not self.thread.is_alive():
            raise APIError(503, "the engine thread is not running; see the server log", code="engine_down")
        future: Future = Future()
        self.thread.send(Inspect(fn, future))
        return await asyncio.wrap_future(future)


class Stream:
    """One request's text chunks, then its ``Finished``; ``close()`` drops it if unfinished.

    Its admission slot comes back exactly once: when the engine finishes or refuses the job,
    or when the reader closes early, even if the reader never started reading.
    """

    def __init__(self, client: EngineClient, prompt_ids: tuple[int, ...], sampling: Sampling,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.job = Job(client.next_job_id(), prompt_ids, sampling.max_tokens, sampling.temperature, sampling.top_p,
                       sampling.stop, sampling.seed, time.monotonic(),
                       lambda event: loop.call_soon_threadsafe(self._deliver, event))
        self.started = Started(len(prompt_ids), 0)
        self.finished: Finished | None = None
        self._events: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._settled = False
        client.in_flight += 1
        client.thread.send(Submit(self.job))

    def _deliver(self, event: JobEvent) -> None:
        """On the event loop: queue an event from the engine thread; its last one frees the slot."""
        self._events.put_nowait(event)
        if isinstance(event, Finished | Rejected):
            self._settle()

    def _settle(self) -> None:
        if not self._settled:
            self._settled = True
            self.client.in_flight -= 1

    async def next_event(self) -> JobEvent:
        return await self._events.get()

    async def events(self, disconnected: Callable[[], Awaitable[bool]] | None = None,
                     ) -> AsyncIterator[TextChunk | Finished]:
        """Chunks until ``Finished``; polls ``disconnected`` while waiting (non-streamed requests)."""
        try:
            while self.finished is None:
                event = await self._next(disconnected)
                if event is None:
                    return
                if isinstance(event, Finished):
                    self.finished = event
                assert isinstance(event, TextChunk | Finished)
                yield event
        finally:
            self.close()

    async def _next(self, disconnected: Callable[[], Awaitable[bool]] | None) -> JobEvent | None:
        if disconnected is None:
            return await self.next_event()
        getter = asyncio.ensure_future(self._events.get())
        try:
            while True:
                done, _ = await asyncio.wait({getter}, timeout=DISCONNECT_POLL_S)
                if done:
                    return getter.result()
                if await disconnected():
                    return None
        finally:
            getter.cancel()

    def close(self) -> None:
        """The reader is done: a job the engine has not finished is dropped (its blocks freed)."""
        if not self._settled:
            self.client.thread.send(Drop(self.job.job_id))
            self._settle()
