"""Start ``blockpool serve``: build the engine on its owner thread, then serve HTTP with uvicorn."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, cast

import uvicorn

from engine.factory import engine_factory
from engine.loading.gguf_convert import print_progress

from .app import create_app
from .client import EngineClient
from .engine_link import EngineLink
from .event_hub import EventHub
from .metrics import ServerMetrics
from .settings import ServeSettings
from .state import ServeState

if TYPE_CHECKING:
    from engine.batch_engine import BlockPoolBatchEngine


class ServeError(Exception):
    """The server cannot start (exit status 2, message on stderr)."""


def model_id(settings: ServeSettings) -> str:
    return settings.served_model_name or settings.model_name


def start_engine(settings: ServeSettings, *, loaded_model=None) -> tuple[EngineLink, EventHub]:
    """The owner thread, started and its engine ready; raises ServeError when the engine cannot be built.

    ``loaded_model``: (model, tokenizer) already in memory (tests), else ``settings.model`` loads."""
    hub = EventHub()
    factory = engine_factory(settings.engine_config(max_batch_size=settings.max_batch), loaded_model=loaded_model)
    link = EngineLink(factory=factory, metrics=ServerMetrics(model_id(settings)),
                      max_conversations=settings.max_conversations, on_events=hub.from_engine,
                      on_loading=print_progress)
    link.start()
    link.ready.wait()
    if link.error is not None:
        raise ServeError(f"cannot start the engine: {link.error}")
    return link, hub


def serve_state(settings: ServeSettings, link: EngineLink, hub: EventHub) -> ServeState:
    """What the routes share, over a started engine link."""
    engine = cast("BlockPoolBatchEngine", link.owner.engine)
    client = EngineClient(link, capacity=settings.max_batch + settings.max_queue,
                          blocks_for_context=engine.spec.blocks_for_context,
                          max_context_blocks=engine.pool.total_blocks,
                          request_timeout_s=settings.request_timeout_s)
    return ServeState(settings=settings, model_id=model_id(settings), tokenizer=engine.tokenizer, client=client,
                      hub=hub, created=int(time.time()))


def uvicorn_config(settings: ServeSettings, app: object) -> uvicorn.Config:
    """h11 (not httptools) so ``max_incomplete_event_bytes`` bounds a request's line and headers; uvicorn
    has no header-read timeout, but a silent connection costs one asyncio task, counted by
    ``limit_concurrency``, and never blocks other clients."""
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                          timeout_graceful_shutdown=5, http="h11", timeout_keep_alive=settings.timeout_keep_alive_s,
                          h11_max_incomplete_event_size=settings.max_incomplete_event_bytes,
                          limit_concurrency=settings.limit_concurrency)


def serve(settings: ServeSettings) -> int:
    link, hub = start_engine(settings)
    state = serve_state(settings, link, hub)
    pool = cast("BlockPoolBatchEngine", link.owner.engine).pool
    print(f"blockpool serve: {state.model_id} · {pool.total_blocks} blocks × {pool.spec.block_tokens} tok · "
          f"batch {settings.max_batch} · queue {settings.max_queue}"
          f"{' · API key required' if settings.api_key else ''}", file=sys.stderr, flush=True)
    config = uvicorn_config(settings, create_app(state))
    try:
        uvicorn.Server(config).run()
    finally:
        link.owner.stop(timeout_s=5.0)
    return 0
