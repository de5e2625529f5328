"""The server's HTTP API, asynchronously: chat streams, the model list, the pool, events, metrics.

Runs on the remote engine's event loop. Every failure comes out as a ``ServerError``
whose text says what happened and what to do.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from telemetry import Event, parse_event
from tui.remote.errors import ServerError, status_error, transport_error
from tui.remote.wire import SseParser

CONVERSATION_HEADER = "x-blockpool-conversation"  # blockpool serve: who owns this reply's blocks
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 120.0  # per read: a long prefill sends nothing but keep-alive comments, which reset it
EVENTS_READ_TIMEOUT_S = 60.0  # blockpool serve sends a keep-alive every 15 s


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The server took the request; ``conversation`` owns its blocks (blockpool serve only)."""

    conversation: str | None


@dataclass(frozen=True, slots=True)
class StreamText:
    text: str


@dataclass(frozen=True, slots=True)
class StreamUsage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


@dataclass(frozen=True, slots=True)
class StreamDone:
    finish_reason: str


ChatEvent = StreamOpened | StreamText | StreamUsage | StreamDone


class ServerClient:
    """One ``httpx.AsyncClient`` for ``url``, with the API key on every request."""

    def __init__(self, url: str, *, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        # trust_env=False: no proxy from the environment ever sees the key or the prompts.
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)

    async def close(self) -> None:
        await self.http.aclose()

    async def models(self) -> list[str]:
        """The served model ids (raises ServerError: unreachable, a wrong key, not an OpenAI server)."""
        body = await self._get_json("/v1/models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ServerError(f"{self.url}/v1/models is not an OpenAI model list; is --server an OpenAI-compatible "
                              "server's base URL (without /v1)?")
        return [str(m.get("id")) for m in data if isinstance(m, dict)]

    async def has_pool(self) -> bool:
        """True for ``blockpool serve`` (it answers GET /v1/pool)."""
        try:
            await self._get_json("/v1/pool")
        except ServerError as exc:
            if exc.status in (404, 405):
                return False
            raise
        return True

    async def metrics(self) -> str | None:
        """The Prometheus text of GET /metrics, or None when the server has none."""
        try:
            response = await self.http.get("/metrics")
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from exc
        if response.status_code in (404, 405, 501):
            return None
        if response.status_code != 200:
            raise status_error(self.url, response.status_code, response.content)
        return response.text

    async def chat(self, body: dict[str, Any]) -> AsyncIterator[ChatEvent]:
        """A streamed chat completion; closing the iterator closes the connection (the server cancels)."""
        started = False
        try:
            async with self.http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise status_error(self.url, response.status_code, await response.aread())
                started = True
                yield StreamOpened(response.headers.get(CONVERSATION_HEADER))
                async for event in _chat_events(self.url, response):
                    yield event
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc, mid_reply=started) from exc

    async def events(self) -> AsyncIterator[Event]:
        """blockpool serve's telemetry stream (GET /v1/events), a pool snapshot first."""
        timeout = httpx.Timeout(EVENTS_READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        try:
            async with self.http.stream("GET", "/v1/events", timeout=timeout) as response:
                if response.status_code != 200:
                    raise status_error(self.url, response.status_code, await response.aread())
                parser = SseParser()
                async for line in response.aiter_lines():
                    frame = parser.feed(line)
                    if frame is None:
                        continue
                    try:
                        yield parse_event(frame.data)
                    except ValidationError:
                        continue  # a kind this TUI does not know (a newer server): skip it
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from exc

    async def _get_json(self, path: str) -> Any:
        try:
            response = await self.http.get(path)
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from exc
        if response.status_code != 200:
            raise status_error(self.url, response.status_code, response.content)
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise ServerError(f"{self.url}{path} answered something that is not JSON; is --server the base URL "
                              "of an OpenAI-compatible server?") from exc


async def _chat_events(url: str, response: httpx.Response) -> AsyncIterator[ChatEvent]:
    """The stream's events; a stream that ends with neither ``[DONE]`` nor a finish reason is an error."""
    parser = SseParser()
    finished = False
    async for line in response.aiter_lines():
        frame = parser.feed(line)
        if frame is None:
            continue
        if frame.data.strip() == "[DONE]":
            return
        try:
            chunk = json.loads(frame.data)
        except json.JSONDecodeError:
            continue
        for event in _chunk_events(url, chunk):
            finished = finished or isinstance(event, StreamDone)
            yield event
    if not finished:
        raise ServerError(f"the stream from {url} ended early, before the reply was finished; send again")


def _chunk_events(url: str, chunk: Any) -> list[ChatEvent]:
    if not isinstance(chunk, dict):
        return []
    if "error" in chunk:  # the status line went out long ago: the server reports a failure in the stream
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise ServerError(f"the server at {url} could not finish the reply: {message}")
    events: list[ChatEvent] = []
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if content := delta.get("content"):
            events.append(StreamText(content))
        if reason := choice.get("finish_reason"):
            events.append(StreamDone(reason))
    if usage := chunk.get("usage"):
        details = usage.get("prompt_tokens_details") or {}
        events.append(StreamUsage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                            int(details.get("cached_tokens") or 0)))
    return events
