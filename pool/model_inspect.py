"""Read cache layout, KV shape and dtype off an mlx-lm model.

Cache classes are recognised by exact class name, so the pool never imports
mlx-lm and subclasses with other semantics (BatchKVCache, ...) are refused.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from pool.errors import UnsupportedCacheError

# Quantized layers store uint32 weights with float scales/biases that need
# not match the activation dtype, so those names are only a last resort.
_QUANT_SUFFIXES = (".scales", ".biases")


def cache_layout(model: Any) -> tuple[tuple[str, ...], int | None]:
    """Per-layer "global"/"sliding" types and the single sliding window."""
    if not hasattr(model, "make_cache"):
        return ("global",) * len(model.layers), None
    layer_types: list[str] = []
    windows: set[int] = set()
    for layer_id, cache in enumerate(model.make_cache()):
        kind = type(cache).__name__
        if kind == "KVCache":
            layer_types.append("global")
        elif kind == "RotatingKVCache" and getattr(cache, "keep", 0) == 0:
            layer_types.append("sliding")
            windows.add(cache.max_size)
        else:
            raise UnsupportedCacheError(_unsupported_message(layer_id, cache))
    if len(windows) > 1:
        raise UnsupportedCacheError(
            f"sliding layers use several windows {sorted(windows)}; "
            "the pool supports one sliding window per model"
        )
    return tuple(layer_types), (windows.pop() if windows else None)


def _unsupported_message(layer_id: int, cache: Any) -> str:
    kind = type(cache).__name__
    detail = ""
    if kind == "RotatingKVCache":
        detail = f" with keep={cache.keep} (attention-sink tokens)"
    return (
        f"layer {layer_id} uses {kind}{detail}; only KVCache and "
        "RotatingKVCache (keep=0) layers can be paged"
    )


def kv_shape(model: Any) -> tuple[int, int]:
    """(n_kv_heads, head_dim), from `model.args` or else the first attention."""
    args = getattr(model, "args", None)
    n_heads = getattr(args, "num_attention_heads", None)
    n_kv_heads = getattr(args, "num_key_value_heads", None) or n_heads
    head_dim = getattr(args, "head_dim", None)
    if head_dim is None and n_heads and getattr(args, "hidden_size", None):
        head_dim = args.hidden_size // n_heads
    if n_kv_heads and head_dim:
        return n_kv_heads, head_dim
    attn = getattr(model.layers[0], "self_attn", None)
    if attn is not None and hasattr(attn, "n_kv_heads") and hasattr(attn, "head_dim"):
        return attn.n_kv_heads, attn.head_dim
    raise ValueError(
        f"cannot find n_kv_heads/head_dim on {type(model).__name__}: "
        "no model.args and no layers[0].self_attn.n_kv_heads/head_dim"
    )


def param_dtype(model: Any) -> str:
    """Name of the dtype the model's floating-point parameters use."""
    floating = [
        (name, p)
        for name, p in tree_flatten(model.parameters())
        if mx.issubdtype(p.dtype, mx.floating)
    ]
    plain = [p for name, p in floating if not name.endswith(_QUANT_SUFFIXES)]
    chosen = plain or [p for _, p in floating]
    if not chosen:
        raise ValueError(f"{type(model).__name__} has no floating-point parameters")
    return str(chosen[0].dtype).rsplit(".", 1)[-1]
