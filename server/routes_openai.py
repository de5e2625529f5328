"""The OpenAI-compatible routes: chat completions, completions, models."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from .client import Stream
from .jobs import Abandoned, Finished
from .prompts import chat_prompt_ids, completion_prompt_ids
from .responses import chat_completion, chat_stream, text_completion, text_stream
from .schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    TextCompletion,
)
from .state import ServeState, serve_state

router = APIRouter()
CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it
# On streamed replies: the owner of the request's blocks in /v1/pool and /v1/events, so a client finds its own.
CONVERSATION_HEADER = "X-Blockpool-Conversation"
State = Annotated[ServeState, Depends(serve_state)]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "invalid request (bad JSON, wrong types, empty messages, a prompt larger than the pool)",
        401: "missing or wrong API key",
        404: "unknown model",
        413: "request body too large",
        403: "a Host or Origin name not allowed without an API key",
        429: "queue full (see Retry-After)",
        500: "the server failed on this request",
        503: "the engine could not finish the reply",
        504: "the request passed --request-timeout-s and was cancelled",
    }.items()
}
STREAMED = {200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE chunks when stream=true"}}


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses={**ERRORS, **STREAMED})
async def chat_completions(body: ChatCompletionRequest, request: Request, state: State) -> Any:
    state.check_model(body.model)
    sampling = state.sampling(body)
    prompt_ids = await run_in_threadpool(chat_prompt_ids, state.tokenizer, body.messages)
    stream = await state.client.start(prompt_ids, sampling)
    if body.stream:
        frames = chat_stream(state.model_id, _stream_events(stream, state), include_usage=body.include_usage)
        return _sse(frames, stream)
    done = await _collect(stream, request)
    return chat_completion(state.model_id, done) if done else Response(status_code=CLIENT_GONE)


@router.post("/v1/completions", response_model=TextCompletion, responses={**ERRORS, **STREAMED})
async def completions(body: CompletionRequest, request: Request, state: State) -> Any:
    state.check_model(body.model)
    sampling = state.sampling(body)
    prompt_ids = await run_in_threadpool(completion_prompt_ids, state.tokenizer, body.prompt)
    stream = await state.client.start(prompt_ids, sampling)
    if body.stream:
        frames = text_stream(state.model_id, _stream_events(stream, state), include_usage=body.include_usage)
        return _sse(frames, stream)
    done = await _collect(stream, request)
    return text_completion(state.model_id, done) if done else Response(status_code=CLIENT_GONE)


@router.get("/v1/models", response_model=ModelList, responses={401: ERRORS[401]})
async def models(state: State) -> ModelList:
    return ModelList(data=[ModelCard(id=state.model_id, created=state.created)])


async def _collect(stream: Stream, request: Request) -> Finished | Abandoned | None:
    """The finished reply, or None when the client hung up meanwhile (its request is dropped)."""
    async for event in stream.events(request.is_disconnected):
        if isinstance(event, Finished | Abandoned):
            return event
    return None


def _stream_events(stream: Stream, state: ServeState) -> Any:
    return stream.events(keep_alive_s=state.settings.keep_alive_s)


def _sse(frames: Any, stream: Stream) -> StreamingResponse:
    # The background close also covers a client gone before the first frame (the frames never ran).
    return StreamingResponse(frames, media_type="text/event-stream", background=BackgroundTask(stream.close),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **_conversation(stream)})


def _conversation(stream: Stream) -> dict[str, str]:
    return {CONVERSATION_HEADER: stream.accepted.agent_id}
