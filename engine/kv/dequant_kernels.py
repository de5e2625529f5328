"""Fused dequantize-and-gather kernels for quantized blocks on the CPU (numba, lazily built).

NumPy dequantizes in three passes with a ufunc call per 64-value group (about 10x a copy,
measured), and it has no vector float16 conversion; MLX's CPU ``dequantize`` is slower
still. These kernels read each block's packed values, scales and biases once and write
the floats once, vectorised by LLVM for the CPU they run on (float16 through the CPU's own
conversion instructions, ``vcvtps2ph`` on x86). The arithmetic is MLX's, rounding for
rounding: ``out = dtype(dtype(scale * q) + bias)`` computed in float32, so a gather gives
back exactly what ``mx.dequantize`` would.

Numba caches compiled code keyed by the CPU's name and features, so a home folder shared
by different machines never runs code built for another CPU.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .dequant_paths import BFLOAT16, FLOAT16, FLOAT32


@intrinsic
def _to_half(typingctx: Any, x: Any) -> Any:  # float32 -> float16 bits, IEEE round to nearest even
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@intrinsic
def _from_half(typingctx: Any, x: Any) -> Any:  # float16 bits -> float32 (exact)
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@numba.njit(inline="always")
def _from_bf16(h: Any) -> Any:
    return np.uint32(np.uint32(h) << np.uint32(16)).view(np.float32)


@numba.njit(inline="always")
def _to_bf16(f: Any) -> Any:  # round to nearest even, as MLX's bfloat16 (no NaN arises here)
    u = np.float32(f).view(np.uint32)
    return np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))


@numba.njit(inline="always")
def _load(kind: int, x: Any) -> Any:
    if kind == FLOAT16:
        return _from_half(x)
    if kind == BFLOAT16:
        return _from_bf16(x)
    return np.float32(x)


@numba.njit(inline="always")
def _value(kind: int, scale: Any, q: Any, bias: Any) -> Any:
    """MLX's ``scale * q + bias`` in the output type: each operation rounds to it."""
    product = scale * np.float32(q)
    if kind == FLOAT16:
        return _to_half(_from_half(_to_half(product)) + bias)
    if kind == BFLOAT16:
        return _to_bf16(_from_bf16(_to_bf16(product)) + bias)
    return product + bias


@numba.njit(inline="always")
def _segments(kind: int, bits: int, group: int, q: Any, scales: Any, biases: Any,
              starts: Any, counts: Any, out: Any) -> None:
    groups = scales.shape[1]
    o = 0
    for seg in range(starts.shape[0]):
        for row in range(starts[seg], starts[seg] + counts[seg]):
            for g in range(groups):
                scale = _load(kind, scales[row, g])
                bias = _load(kind, biases[row, g])
                # slices: indices from range() are known non-negative, so numba adds no
                # wrap-around select and LLVM vectorises the loop
                dst = out[o + g * group : o + (g + 1) * group]
                if bits == 8:
                    src = q[row, g * group : (g + 1) * group]
                    for i in range(group):
                        dst[i] = _value(kind, scale, src[i], bias)
                else:  # 4 bits: low nibble first
                    src = q[row, g * group // 2 : (g + 1) * group // 2]
                    for i in range(group // 2):
                        dst[2 * i] = _value(kind, scale, src[i] & np.uint8(15), bias)
                        dst[2 * i + 1] = _value(kind, scale, src[i] >> np.uint8(4), bias)
            o += groups * group


# One compiled entry point per (output type, bits): with them as constants (closure cells,
# which numba freezes) LLVM drops the other branches and vectorises the inner loop; as
# arguments it ran 4-7x slower, measured. Numba's disk cache keys each by its cell values.
def _entry(kind: int, bits: int) -> Any:
    def entry(group, q, scales, biases, starts, counts, out):  # type: ignore[no-untyped-def]
        _segments(kind, bits, group, q, scales, biases, starts, counts, out)

    entry.__name__ = entry.__qualname__ = f"dequantize_kind{kind}_q{bits}"
    return numba.njit(cache=True, nogil=True, boundscheck=False)(entry)


_ENTRY = {(kind, bits): _entry(kind, bits) for kind in (FLOAT32, FLOAT16, BFLOAT16) for bits in (8, 4)}


def dequantize_segments(kind: int, bits: int, group: int, q: np.ndarray, scales: np.ndarray,
                        biases: np.ndarray, starts: np.ndarray, counts: np.ndarray, out: np.ndarray) -> None:
    """Dequantize slab rows into ``out`` (1-D, filled in order).

    ``q``: packed values as bytes, one slab row (one token of one head) per row;
    ``scales``/``biases``: ``[rows, groups]``; segment ``i`` is ``counts[i]`` rows from row
    ``starts[i]``. Segments come in output order, (layer, K|V, head, block)."""
    _ENTRY[kind, bits](group, q, scales, biases, starts, counts, out)
