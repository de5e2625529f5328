"""Start ``blockpool serve``: build the engine on its thread, then serve HTTP with uvicorn."""

from __future__ import annotations

import sys
import time
from typing import Any

import uvicorn

from telemetry import Recorder

from .app import create_app
from .client import EngineClient
from .engine_thread import EngineFactory, EngineThread
from .event_hub import EventHub
from .metrics import ServerMetrics
from .settings import ServeSettings
from .state import ServeState

DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"


class ServeError(Exception):
    """The server cannot start (exit status 2, message on stderr)."""


def model_id(settings: ServeSettings) -> str:
    return settings.served_model_name or settings.model or DEFAULT_MODEL_ID


def engine_factory(settings: ServeSettings) -> EngineFactory:
    def build(recorder: Recorder) -> Any:
        import engine  # MLX loads here, on the engine thread
        from pool import BlockPool, ModelCacheSpec

        model, tokenizer = engine.load_model(settings.model)
        spec = ModelCacheSpec.from_model(model, kv_bits=settings.kv_bits)
        if settings.blocks is not None:
            pool = BlockPool(spec, settings.blocks)
        else:
            pool = BlockPool.from_memory_budget(spec, settings.kv_memory_bytes)
        return engine.BlockPoolBatchEngine(model, tokenizer, pool, spec, max_batch_size=settings.max_batch,
                                           recorder=recorder)

    return build


def start_engine(settings: ServeSettings) -> tuple[EngineThread, EventHub]:
    """The engine thread, started and ready; raises ServeError when the engine cannot be built."""
    hub = EventHub()
    thread = EngineThread(factory=engine_factory(settings), metrics=ServerMetrics(model_id(settings)),
                          max_conversations=settings.max_conversations, on_events=hub.from_engine)
    thread.start()
    thread.ready.wait()
    if thread.error is not None:
        raise ServeError(f"cannot start the engine: {thread.error}")
    return thread, hub


def serve(settings: ServeSettings) -> int:
    thread, hub = start_engine(settings)
    pool = thread.engine.pool
    client = EngineClient(thread, capacity=settings.max_batch + settings.max_queue)
    state = ServeState(settings=settings, model_id=model_id(settings), tokenizer=thread.engine.tokenizer,
                       client=client, hub=hub, created=int(time.time()))
    print(f"blockpool serve: {state.model_id} · {pool.total_blocks} blocks × {pool.spec.block_tokens} tok · "
          f"batch {settings.max_batch} · queue {settings.max_queue}"
          f"{' · API key required' if settings.api_key else ''}", file=sys.stderr, flush=True)
    config = uvicorn.Config(create_app(state), host=settings.host, port=settings.port, log_level="info",
                            access_log=False, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run()
    finally:
        thread.stop()
    return 0
