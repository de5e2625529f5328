"""Model loading, the block-pool batch engine, and what every front end drives it through: the
engine's shape (``protocol``), its factory (``factory``) and its one owner thread (``owner_thread``).

Attributes load lazily (PEP 562) so that nothing here imports MLX; importing the package
first loads the fast BLAS that MLX's CPU backend should use (``engine.blas``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from engine.blas.process import load_in_process as _load_fast_blas

# Before anything imports MLX: its CPU backend binds its BLAS when libmlx.so loads.
_load_fast_blas()

_EXPORTS = {
    "BlockPoolBatchEngine": "engine.batch_engine",
    "DEFAULT_MODEL_NAME": "engine.loading.paths",
    "EngineConfig": "engine.factory",
    "EngineOwner": "engine.owner_thread",
    "Completion": "engine.outputs",
    "EngineClosed": "engine.errors",
    "StepOutput": "engine.outputs",
    "TokenDelta": "engine.outputs",
    "PrefillProgress": "engine.outputs",
    "KVBlockStore": "engine.kv.kv_store",
    "load_model": "engine.loading.loader",
    "ModelLoadError": "engine.loading.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
