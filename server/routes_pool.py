"""Operations routes: health, Prometheus metrics, the pool snapshot and the telemetry stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from telemetry import Event

from .pool_view import PoolView, pool_event, pool_view
from .schemas import ErrorResponse, Health
from .state import ServeState, serve_state

router = APIRouter()
State = Annotated[ServeState, Depends(serve_state)]
KEEPALIVE_S = 15.0
UNAUTHORIZED = {401: {"model": ErrorResponse, "description": "missing or wrong API key"}}


@router.get("/health", response_model=Health, responses={503: {"model": ErrorResponse}})
async def health(state: State) -> Response:
    if not state.client.alive():
        return JSONResponse({"error": {"message": "the engine thread stopped; see the server log",
                                       "type": "server_error", "param": None, "code": "engine_down"}}, 503)
    return JSONResponse(Health(model=state.model_id).model_dump())


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}, **UNAUTHORIZED})
async def metrics(state: State) -> Response:
    return Response(await state.client.inspect(state.client.link.scrape), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/pool", response_model=PoolView, responses=UNAUTHORIZED)
async def pool(state: State) -> PoolView:
    """Who holds which block of which layer, and each agent's state."""
    return await state.client.inspect(pool_view)


@router.get("/v1/events", response_class=StreamingResponse, responses={
    200: {"content": {"text/event-stream": {}}, "description": "telemetry events as SSE"}, **UNAUTHORIZED})
async def events(state: State) -> StreamingResponse:
    """Telemetry as server-sent events (``event: <kind>``, ``data: <JSON>``), a pool snapshot first."""
    queue = state.hub.listen()
    first = await state.client.inspect(pool_event)
    return StreamingResponse(_event_frames(state, queue, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _event_frames(state: ServeState, queue: asyncio.Queue[Event], first: Event) -> AsyncIterator[str]:
    try:
        yield _frame(first)
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"  # proxies close silent connections
                continue
            yield _frame(event)
    finally:
        state.hub.leave(queue)


def _frame(event: Event) -> str:
    return f"event: {event.kind}\ndata: {event.model_dump_json()}\n\n"
