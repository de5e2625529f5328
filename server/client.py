"""The asyncio side of the engine link: admission, submit, and one stream per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from engine.owner_messages import Drop, Inspect, RequestAccepted, RequestRefused, Submit
from engine.owner_thread import EngineOwner

from .engine_link import EngineLink, Route, StreamEvent
from .errors import APIError
from .jobs import Abandoned, Finished, KeepAlive, TextChunk

DISCONNECT_POLL_S = 0.5
RETRY_AFTER_S = 1
MAX_UNREAD_EVENTS = 1024  # one per step: a reader this far behind has stopped reading
# How the owner thread's refusals reach the client: (HTTP status, OpenAI error code).
REFUSALS = {"invalid": (400, "invalid_request"), "context_gone": (400, "invalid_request"),
            "internal": (500, "internal_error")}


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    cache_salt: str | None = None


class EngineClient:
    """Talks to the owner thread for the routes; lives on the event loop's thread.

    ``max_context_blocks``: the pool's size, so a prompt larger than it is refused (400)
    before it reaches the engine; ``blocks_for_context`` counts a context's blocks.
    """

    def __init__(self, link: EngineLink, *, capacity: int, blocks_for_context: Callable[[int], int],
                 max_context_blocks: int, request_timeout_s: float = 600.0) -> None:
        self.link = link
        self.request_timeout_s = request_timeout_s
        self.capacity = capacity  # requests running or waiting at once; more get 429
        self.in_flight = 0  # changed on the event loop's thread only
        self._blocks_for_context = blocks_for_context
        self._max_context_blocks = max_context_blocks

    @property
    def owner(self) -> EngineOwner:
        return self.link.owner

    def alive(self) -> bool:
        return self.owner.is_alive()

    async def start(self, prompt_ids: list[int], sampling: Sampling) -> Stream:
        """Submit a request and wait until the engine took it (or refused it: APIError)."""
        self._check_alive()
        if self.in_flight >= self.capacity:
            raise APIError(429, f"{self.in_flight} requests are running or waiting, the limit (--max-queue plus "
                                f"the batch) is {self.capacity}; retry in {RETRY_AFTER_S} s",
                           code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
        self._check_fits(len(prompt_ids))
        stream = Stream(self, tuple(prompt_ids), sampling, asyncio.get_running_loop())
        try:
            first = await stream.next_event()
        except BaseException:  # the client went away before the engine answered
            stream.close()
            raise
        if isinstance(first, Abandoned):
            raise APIError(first.status, first.message, code="timeout")
        if isinstance(first, RequestRefused):
            status, code = REFUSALS[first.reason]
            message = first.error if status < 500 else "the server failed to start this request; see the server log"
            raise APIError(status, message, param="messages", code=code)
        assert isinstance(first, RequestAccepted)
        stream.accepted = first
        return stream

    async def inspect(self, fn: Callable[[EngineOwner], Any]) -> Any:
        """``fn(owner)`` run on the owner thread between steps."""
        self._check_alive()
        future: Future = Future()
        self.owner.send(Inspect(fn, future))
        return await asyncio.wrap_future(future)

    def _check_alive(self) -> None:
        if not self.alive():
            raise APIError(503, "the engine thread is not running; see the server log", code="engine_down")

    def _check_fits(self, prompt_tokens: int) -> None:
        needed = self._blocks_for_context(prompt_tokens + 1)
        if needed > self._max_context_blocks:
            raise APIError(400, f"the prompt has {prompt_tokens} tokens, which need {needed} KV blocks, but the "
                                f"whole pool has {self._max_context_blocks}; shorten the messages or start the "
                                "server with a larger --kv-memory", param="messages", code="context_length_exceeded")


class Stream:
    """One request's text chunks, then its ``Finished``; ``close()`` drops it if unfinished.

    Its admission slot comes back exactly once: when the engine finishes or refuses the
    request, or when the reader closes early, even if the reader never started reading.
    """

    def __init__(self, client: EngineClient, prompt_ids: tuple[int, ...], sampling: Sampling,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.request_id = client.owner.new_request_id()
        self.accepted = RequestAccepted(self.request_id, "", 0)
        self.finished: Finished | Abandoned | None = None
        self._events: asyncio.Queue[StreamEvent | Abandoned] = asyncio.Queue()
        self._settled = False
        client.in_flight += 1
        # Runs whether or not anyone reads: a reader stuck in a full socket cannot hold the blocks past it.
        self._deadline = loop.call_later(client.request_timeout_s, self._abandon,
                                         f"the request did not finish in {client.request_timeout_s:g} s "
                                         "(--request-timeout-s); it was cancelled")
        route = Route(lambda event: loop.call_soon_threadsafe(self._deliver, event), len(prompt_ids),
                      time.monotonic())
        client.link.open(self.request_id, route)
        client.owner.send(Submit(self.request_id, prompt_ids, sampling.max_tokens, temperature=sampling.temperature,
                                 top_p=sampling.top_p, stop=sampling.stop, seed=sampling.seed,
                                 cache_salt=sampling.cache_salt))

    def _deliver(self, event: StreamEvent) -> None:
        """On the event loop: queue an event from the owner thread; its last one frees the slot."""
        if self._settled:
            return  # abandoned meanwhile
        self._events.put_nowait(event)
        if isinstance(event, Finished | RequestRefused):
            self._settle()
        elif self._events.qsize() >= MAX_UNREAD_EVENTS:
            self._abandon(f"the client read nothing for {MAX_UNREAD_EVENTS} steps; the request was cancelled")

    def _abandon(self, message: str) -> None:
        """Drop the request in the engine (its blocks freed) and tell the reader, if it ever reads."""
        if not self._settled:
            self.close()
            self._events.put_nowait(Abandoned(message))

    def _settle(self) -> None:
        if not self._settled:
            self._settled = True
            self._deadline.cancel()
            self.client.in_flight -= 1

    async def next_event(self) -> StreamEvent | Abandoned:
        return await self._events.get()

    async def events(self, disconnected: Callable[[], Awaitable[bool]] | None = None, *,
                     keep_alive_s: float | None = None) -> AsyncIterator[TextChunk | Finished | Abandoned | KeepAlive]:
        """Chunks until ``Finished`` (or ``Abandoned``); polls ``disconnected`` while waiting (non-streamed
        requests); a ``KeepAlive`` after each ``keep_alive_s`` without an event (streams)."""
        try:
            while self.finished is None:
                event = await self._next(disconnected, keep_alive_s)
                if event is None:
                    return
                if isinstance(event, Finished | Abandoned):
                    self.finished = event
                assert isinstance(event, TextChunk | Finished | Abandoned | KeepAlive)
                yield event
        finally:
            self.close()

    async def _next(self, disconnected: Callable[[], Awaitable[bool]] | None,
                    keep_alive_s: float | None) -> StreamEvent | Abandoned | KeepAlive | None:
        getter = asyncio.ensure_future(self._events.get())
        try:
            while True:
                done, _ = await asyncio.wait({getter}, timeout=DISCONNECT_POLL_S if disconnected else keep_alive_s)
                if done:
                    return getter.result()
                if disconnected is not None and await disconnected():
                    return None
                if keep_alive_s is not None:
                    return KeepAlive()
        finally:
            getter.cancel()

    def close(self) -> None:
        """The reader is done: a request the engine has not finished is dropped (its blocks freed)."""
        if not self._settled:
            self.client.link.close(self.request_id)
            self.client.owner.send(Drop(self.request_id))
            self._settle()
