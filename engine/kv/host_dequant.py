"""How quantized blocks become floats on the CPU: the fused numba kernel, probed, or NumPy.

The kernel is compiled for the CPU it runs on and checked, once per store, against
``mx.dequantize`` on sample blocks of the store's own format before any gather trusts it.
A missing numba, a failed build or a wrong answer falls back to NumPy (float32 and float16
outputs) or to MLX's own ops (bfloat16), with one warning that says why.
``BLOCKPOOL_KV_KERNEL=numpy`` picks the fallback on purpose.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from pool import ModelCacheSpec

from .dequant_paths import KINDS, as_kernel_array

KERNEL_ENV = "BLOCKPOOL_KV_KERNEL"
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True, slots=True)
class HostDequant:
    """The choice for one block format: ``kernel`` (or None for NumPy) and why."""

    kernel: Callable[..., None] | None
    reason: str

    @property
    def name(self) -> str:
        return "numba" if self.kernel is not None else "numpy"


def choose(spec: ModelCacheSpec) -> HostDequant:
    """The fused kernel when it builds here and gives MLX's exact values for ``spec``'s format."""
    if os.environ.get(KERNEL_ENV, "").strip().lower() in {"numpy", "0", "off"}:
        return HostDequant(None, f"{KERNEL_ENV}={os.environ[KERNEL_ENV]}")
    try:
        from .dequant_kernels import dequantize_segments
    except ImportError as error:
        return _fallback(spec, f"numba is not importable ({error})")
    try:
        expected, got = _probe(spec, dequantize_segments)
    except Exception as error:  # a build or run failure on this CPU: never fatal, only slower
        return _fallback(spec, f"the kernel failed on this CPU ({type(error).__name__}: {error})")
    expected, got = expected.view(np.uint8), got.view(np.uint8)  # bit for bit (-0.0 is not 0.0)
    if not np.array_equal(expected, got):
        bad = int(np.count_nonzero(expected != got))
        return _fallback(spec, f"the kernel's {spec.kv_format} {spec.dtype} values differ from mx.dequantize in {bad} of {got.size} bytes")
    return HostDequant(dequantize_segments, "probed against mx.dequantize")


def _probe(spec: ModelCacheSpec, kernel: Callable[..., None]) -> tuple[np.ndarray, np.ndarray]:
    """Two segments of random rows, wide-ranged so every rounding path is taken."""
    rng = np.random.default_rng(0)
    rows, dim = 37, spec.head_dim
    data = (rng.standard_normal((rows, dim)) * np.exp2(rng.integers(-18, 8, (rows, 1)))).astype(np.float32)
    x = mx.array(data).astype(getattr(mx, spec.dtype))
    q, scales, biases = mx.quantize(x, group_size=spec.kv_group_size, bits=spec.kv_bits)
    expected = mx.dequantize(q, scales, biases, group_size=spec.kv_group_size, bits=spec.kv_bits)
    if spec.dtype == "bfloat16":
        scales, biases, expected = (a.view(mx.uint16) for a in (scales, biases, expected))
    mx.eval(q, scales, biases, expected)
    out = np.empty(rows * dim, dtype=np.array(expected).dtype)
    starts, counts = np.array([5, 0], dtype=np.int64), np.array([rows - 5, 5], dtype=np.int64)
    kernel(KINDS[spec.dtype], spec.kv_bits, spec.kv_group_size, np.array(q).view(np.uint8),
           as_kernel_array(np.array(scales)), as_kernel_array(np.array(biases)), starts, counts,
           as_kernel_array(out))
    reference = np.array(expected)
    return np.concatenate([reference[5:], reference[:5]]).reshape(-1), out


def _fallback(spec: ModelCacheSpec, reason: str) -> HostDequant:
    # NumPy has no bfloat16: those stores use MLX's ops instead (engine.kv.kv_store)
    instead = "MLX ops" if spec.dtype == "bfloat16" else "NumPy"
    if (instead, reason) not in _warned:
        _warned.add((instead, reason))
        print(f"blockpool: quantized blocks dequantize with {instead} (slower): {reason}", file=sys.stderr)
    return HostDequant(None, reason)
