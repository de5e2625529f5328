"""The FastAPI application of ``blockpool serve``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .errors import install_handlers
from .guard import Guard
from .routes_openai import router as openai_router
from .routes_pool import router as pool_router
from .state import ServeState


def create_app(state: ServeState) -> FastAPI:
    """Routes, OpenAI-style error bodies, the API key and body limit, over a running engine thread."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.hub.loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            state.hub.loop = None

    app = FastAPI(
        title="blockpool serve",
        version="0.1.0",
        summary="An OpenAI-compatible server on the block-pool KV-cache engine",
        lifespan=lifespan,
    )
    app.state.serve = state
    install_handlers(app)
    app.include_router(openai_router)
    app.include_router(pool_router)
    key = state.settings.api_key.get_secret_value() if state.settings.api_key is not None else None
    app.add_middleware(Guard, api_key=key, max_body_bytes=state.settings.max_body_bytes,
                       host_names=state.settings.host_names())
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without its 422 answers: bad bodies get 400 with an OpenAI error body here."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
