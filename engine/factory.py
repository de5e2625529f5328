"""One way to build an engine from a config: load the model (once), size the pool, make the engine.

Both front ends (``blockpool-tui``, ``blockpool serve``) hand ``engine_factory(config)`` to the
owner thread (``engine.owner_thread``), which calls it on its own thread, so MLX's state is
born there; a second call (a rebuild after an engine failure) reuses the loaded model.
Nothing here imports MLX until the factory runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.loading.paths import DEFAULT_MODEL_NAME

if TYPE_CHECKING:
    from engine.protocol import Engine
    from pool import BlockPool, ModelCacheSpec
    from telemetry import Recorder

DEFAULT_KV_MEMORY_BYTES = 512 * 2**20

# progress(text, fraction 0..1) while the model loads or converts.
Progress = Callable[[str, float], None]
# Builds an engine on the calling thread: factory(progress, recorder) -> engine.
EngineFactory = Callable[[Progress, "Recorder"], "Engine"]


@dataclass(frozen=True)
class EngineConfig:
    """What an engine is built from (vLLM's EngineArgs, nano-vllm's Config).

    ``blocks`` sizes the pool in blocks, else ``kv_memory_bytes`` does; ``spill_dir`` (None: a
    temp folder, gone after the run) keeps idle contexts within ``spill_budget_bytes``.
    ``hot_cache_bytes`` bounds idle agents' materialised caches (0: every turn gathers).
    """

    model: str | None = None
    blocks: int | None = None
    kv_memory_bytes: int = DEFAULT_KV_MEMORY_BYTES
    kv_bits: int = 16
    max_batch_size: int = 8
    spill_dir: Path | None = None
    spill_budget_bytes: int | None = None
    hot_cache_bytes: int | None = None  # None: as much as the pool holds as floats (cache_limit)

    @property
    def model_label(self) -> str:
        return self.model or f"{DEFAULT_MODEL_NAME} (embedded)"


def build_pool(spec: ModelCacheSpec, config: EngineConfig) -> BlockPool:
    """The block pool ``config`` sizes: ``blocks`` blocks, else as many as ``kv_memory_bytes`` holds."""
    from pool import BlockPool

    if config.blocks is not None:
        return BlockPool(spec, config.blocks)
    return BlockPool.from_memory_budget(spec, config.kv_memory_bytes)


def engine_factory(config: EngineConfig, *, loaded_model: tuple[Any, Any] | None = None) -> EngineFactory:
    """A factory building ``config``'s engine (over ``loaded_model`` when given, else loading it once)."""
    loaded: list[tuple[Any, Any]] = [loaded_model] if loaded_model is not None else []

    def build(progress: Progress, recorder: Recorder) -> Engine:
        from engine.batch_engine import BlockPoolBatchEngine  # MLX loads here, on the calling thread
        from engine.loading.loader import load_model
        from pool import ModelCacheSpec

        if not loaded:
            progress(f"loading {config.model_label}…", 0.0)
            loaded.append(load_model(config.model, progress=progress))
        model, tokenizer = loaded[0]
        progress("building the block pool…", 0.95)
        spec = ModelCacheSpec.from_model(model, kv_bits=config.kv_bits)
        return BlockPoolBatchEngine(model, tokenizer, build_pool(spec, config), spec,
                                    max_batch_size=config.max_batch_size, recorder=recorder,
                                    spill_dir=config.spill_dir, spill_budget_bytes=config.spill_budget_bytes,
                                    hot_cache_bytes=config.hot_cache_bytes)

    return build
