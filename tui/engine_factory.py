"""Builds the real engine from settings, on the engine thread.

MLX is imported inside ``build`` and nowhere above it, so ``blockpool-tui`` can
re-exec itself with OpenBLAS preloaded before MLX loads (see engine.fastblas).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from telemetry import Recorder

from tui.settings import TuiSettings
from tui.worker import Engine, EngineFactory, Progress


def engine_factory(settings: TuiSettings, *, loaded_model: tuple[Any, Any] | None = None,
                   spill_dir: Path | None = None) -> EngineFactory:
    """A factory loading ``settings.model`` (or using ``loaded_model``) into a new pool and engine.

    ``spill_dir``: where idle contexts are spilled and saved on quit, within
    ``settings.spill_budget`` (default: a temp folder, gone after the run). A second
    build (after an engine failure) reuses the loaded model.
    """
    loaded: list[tuple[Any, Any]] = [loaded_model] if loaded_model is not None else []

    def build(progress: Progress, recorder: Recorder) -> Engine:
        import engine  # lazy: loads MLX
        from pool import BlockPool, ModelCacheSpec

        if not loaded:
            progress(f"loading {settings.model or 'SmolLM2-135M-Instruct (embedded)'}…", 0.0)
            loaded.append(engine.load_model(settings.model, progress=progress))
        model, tokenizer = loaded[0]
        progress("building the block pool…", 0.95)
        spec = ModelCacheSpec.from_model(model, kv_bits=settings.kv_bits)
        if settings.blocks is not None:
            pool = BlockPool(spec, settings.blocks)
        else:
            pool = BlockPool.from_memory_budget(spec, settings.kv_memory_bytes)
        return engine.BlockPoolBatchEngine(model, tokenizer, pool, spec, recorder=recorder, spill_dir=spill_dir,
                                           spill_budget_bytes=settings.spill_budget if spill_dir else None)

    return build
