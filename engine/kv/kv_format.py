"""How K/V sit in blocks: the model's floats, or ``mx.quantize``'s affine layout.

A block format is a tuple of *parts*, each an array whose last axis is per token and
head: float blocks have one part (the ``head_dim`` values); 8- and 4-bit blocks have three
(packed ``uint32`` values, one scale and one bias per group, in the model's dtype). Every
part slices along tokens the same way, so blocks, spill files and write-back handle any
format with the same code. A token is quantized once, from the float K/V the model
computed for it, and never again: ``quantize(dequantize(q))`` is not ``q`` in MLX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import mlx.core as mx
import numpy as np

from pool import ModelCacheSpec

A = TypeVar("A", np.ndarray, mx.array)


@dataclass(frozen=True, slots=True)
class Part:
    """One array of a block format: its name in spill files, last-axis size and dtype."""

    name: str
    dim: int
    dtype: mx.Dtype


def parts_of(spec: ModelCacheSpec) -> tuple[Part, ...]:
    dtype: mx.Dtype = getattr(mx, spec.dtype)
    if not spec.quantized:
        return (Part("", spec.head_dim, dtype),)
    groups = spec.head_dim // spec.kv_group_size
    return (Part("q", spec.head_dim * spec.kv_bits // 32, mx.uint32),
            Part("scales", groups, dtype), Part("biases", groups, dtype))


@dataclass(frozen=True, slots=True)
class KVTokens(Generic[A]):
    """K and V of consecutive tokens of one layer, as blocks store them: per part ``[H, T, C]``."""

    keys: tuple[A, ...]
    values: tuple[A, ...]

    @property
    def num_tokens(self) -> int:
        return int(self.keys[0].shape[1])

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.keys + self.values)

    def tokens(self, start: int, stop: int | None = None) -> KVTokens[A]:
        """Tokens ``[start, stop)`` (views, no copy)."""
        return KVTokens(tuple(a[:, start:stop] for a in self.keys), tuple(a[:, start:stop] for a in self.values))

    def last(self, count: int) -> KVTokens[A]:
        return self.tokens(self.num_tokens - count)


def concat_tokens(first: KVTokens[np.ndarray], second: KVTokens[np.ndarray]) -> KVTokens[np.ndarray]:
    """``first``'s tokens then ``second``'s (a copy)."""
    return KVTokens(tuple(np.concatenate(p, axis=1) for p in zip(first.keys, second.keys)),
                    tuple(np.concatenate(p, axis=1) for p in zip(first.values, second.values)))


def host_view(array: mx.array) -> np.ndarray:
    """A writable NumPy view that shares ``array``'s (evaluated) memory."""
    if array.dtype == mx.bfloat16:  # NumPy has no bfloat16: move its bits as uint16
        array = array.view(mx.uint16)
    mx.eval(array)
    return np.array(array, copy=False)


def encode(spec: ModelCacheSpec, keys: mx.array, values: mx.array) -> KVTokens[np.ndarray]:
    """Float ``[H, T, D]`` K/V in the spec's block format, as host arrays (views for float blocks)."""
    if not spec.quantized:
        return KVTokens((host_view(keys),), (host_view(values),))
    qk = mx.quantize(keys, group_size=spec.kv_group_size, bits=spec.kv_bits)
    qv = mx.quantize(values, group_size=spec.kv_group_size, bits=spec.kv_bits)
    mx.eval(qk, qv)
    return KVTokens(tuple(host_view(a) for a in qk), tuple(host_view(a) for a in qv))


def decode(spec: ModelCacheSpec, parts: tuple[mx.array, ...]) -> mx.array:
    """The float K or V that stored ``parts`` stand for (lazy; the caller evaluates)."""
    if not spec.quantized:
        return parts[0]
    q, scales, biases = parts
    return mx.dequantize(q, scales, biases, group_size=spec.kv_group_size, bits=spec.kv_bits)
