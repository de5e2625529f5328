"""OpenAI response bodies and SSE frames from the engine's events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from pydantic import BaseModel

from .errors import APIError, error_body
from .jobs import Abandoned, Finished, KeepAlive, TextChunk
from .schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    PromptTokensDetails,
    TextChoice,
    TextCompletion,
    Usage,
)

DONE = "data: [DONE]\n\n"
KEEP_ALIVE = ": keep-alive\n\n"  # an SSE comment: clients skip it, read timeouts restart
Ending = Finished | Abandoned
Events = AsyncIterator[TextChunk | Finished | Abandoned | KeepAlive]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(done: Finished) -> Usage:
    """Counts as the engine reports them at the end: ``cached_tokens`` includes prefix hits on shared blocks."""
    return Usage(prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
                 total_tokens=done.prompt_tokens + done.completion_tokens,
                 prompt_tokens_details=PromptTokensDetails(cached_tokens=done.cached_tokens))


def finish_reason(done: Ending) -> Literal["stop", "length"]:
    """The OpenAI reason; raises APIError when the engine could not finish the reply, or the server gave up."""
    if isinstance(done, Abandoned):
        raise APIError(done.status, done.message, code="timeout")
    if done.finish_reason == "error":
        raise APIError(503, f"the reply stopped after {done.completion_tokens} tokens: {done.error}",
                       code="engine_error")
    return "length" if done.finish_reason == "length" else "stop"


def chat_completion(model: str, done: Ending) -> ChatCompletion:
    reason = finish_reason(done)  # raises for an error or an abandoned request
    assert isinstance(done, Finished)
    return ChatCompletion(
        id=new_id("chatcmpl"), created=int(time.time()), model=model,
        choices=[ChatChoice(message=AssistantMessage(content=done.text), finish_reason=reason)],
        usage=usage(done),
    )


def text_completion(model: str, done: Ending) -> TextCompletion:
    reason = finish_reason(done)
    assert isinstance(done, Finished)
    return TextCompletion(
        id=new_id("cmpl"), created=int(time.time()), model=model,
        choices=[TextChoice(text=done.text, finish_reason=reason)],
        usage=usage(done),
    )


def sse(payload: BaseModel) -> str:
    # Unset fields (a delta's role after the first chunk, usage before the last) are left out, as OpenAI does.
    return f"data: {payload.model_dump_json(exclude_none=True)}\n\n"


async def chat_stream(model: str, events: Events, *,
                      include_usage: bool) -> AsyncIterator[str]:
    """Chunks as OpenAI streams them: the role, the text pieces, the finish reason, usage, ``[DONE]``."""
    frame_id = new_id("chatcmpl")
    frame = _framer(lambda choices, use: ChatCompletionChunk(
        id=frame_id, created=int(time.time()), model=model, choices=choices, usage=use))
    yield frame([ChunkChoice(delta=Delta(role="assistant", content=""))])
    async for event in events:
        if isinstance(event, KeepAlive):
            yield KEEP_ALIVE
        elif isinstance(event, TextChunk):
            yield frame([ChunkChoice(delta=Delta(content=event.text))])
        else:
            yield _ending(event, lambda reason: frame([ChunkChoice(delta=Delta(), finish_reason=reason)]))
            if include_usage and isinstance(event, Finished):
                yield frame([], usage(event))
    yield DONE


async def text_stream(model: str, events: Events, *,
                      include_usage: bool) -> AsyncIterator[str]:
    frame_id = new_id("cmpl")
    frame = _framer(lambda choices, use: TextCompletion(
        id=frame_id, created=int(time.time()), model=model, choices=choices, usage=use))
    async for event in events:
        if isinstance(event, KeepAlive):
            yield KEEP_ALIVE
        elif isinstance(event, TextChunk):
            yield frame([TextChoice(text=event.text)])
        else:
            yield _ending(event, lambda reason: frame([TextChoice(text="", finish_reason=reason)]))
            if include_usage and isinstance(event, Finished):
                yield frame([], usage(event))
    yield DONE


def _framer(build: Callable[[list, Usage | None], Any]) -> Callable[..., str]:
    def frame(choices: list, use: Usage | None = None) -> str:
        return sse(build(choices, use))

    return frame


def _ending(done: Ending, final_frame: Callable[[str], str]) -> str:
    """The last content frame, or an error frame (the status line went out long ago)."""
    try:
        return final_frame(finish_reason(done))
    except APIError as exc:
        return f"data: {json.dumps(error_body(exc.status, exc.message, code=exc.code))}\n\n"
