"""The slab's row order every gather reads in, and the host side of a quantized gather
(which slab rows go where, and the NumPy fallback).

No numba here (``engine.kv.dequant_kernels`` holds the kernel): a store of float blocks,
or a machine without numba, never imports it.
"""

from __future__ import annotations

import numpy as np

from pool import Block, ModelCacheSpec

FLOAT32, FLOAT16, BFLOAT16 = 0, 1, 2  # the kernel's ``kind``: what outputs, scales and biases hold
KINDS = {"float32": FLOAT32, "float16": FLOAT16, "bfloat16": BFLOAT16}

Layers = list[tuple[list[Block], int]]  # per layer: its blocks in token order, tokens kept


def as_kernel_array(a: np.ndarray) -> np.ndarray:
    """Float16 travels as its uint16 bits (numba has no 16-bit floats; bfloat16 already does)."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


def block_rows(spec: ModelCacheSpec, layers: Layers) -> np.ndarray:
    """Slab rows of one (block, K|V, head), ``block_tokens`` tokens each, for every layer in the
    order (layer, K|V, head, block), so that after a gather each head's tokens run contiguously.

    The slab is ``[block, K|V, head, token, C]``: row ``(block * 2 + kv) * H + head``."""
    heads = spec.n_kv_heads
    kv_heads = np.arange(2 * heads, dtype=np.int64).reshape(2, heads, 1)
    return np.concatenate([
        (np.fromiter((b.block_id for b in blocks), dtype=np.int64, count=len(blocks)) * (2 * heads) + kv_heads).ravel()
        for blocks, _ in layers])


def segments(spec: ModelCacheSpec, layers: Layers) -> tuple[np.ndarray, np.ndarray]:
    """Token-row ``starts`` and row ``counts`` of every (layer, K|V, head, block), in output order.

    A token row is one token of one head: row ``block_row * T + token`` (see ``block_rows``)."""
    heads, tokens = spec.n_kv_heads, spec.block_tokens
    counts = []
    for blocks, kept in layers:
        per_block = np.full(len(blocks), tokens, dtype=np.int64)
        if len(blocks):
            per_block[-1] = kept - (len(blocks) - 1) * tokens
        counts.append(np.broadcast_to(per_block, (2, heads, len(blocks))).ravel())
    return block_rows(spec, layers) * tokens, np.concatenate(counts)


def padded_rows(spec: ModelCacheSpec, blocks: list[Block], half: int, num_blocks: int) -> np.ndarray:
    """Slab rows of one layer's K (``half`` 0) or V, ``[H, num_blocks]``: the blocks' rows for
    each head, then copies of the last one up to ``num_blocks`` (room to grow: rows that are
    overwritten before anything reads them)."""
    heads = spec.n_kv_heads
    ids = np.fromiter((b.block_id for b in blocks), dtype=np.int64, count=len(blocks))
    if len(ids) < num_blocks:
        ids = np.concatenate([ids, np.full(num_blocks - len(ids), ids[-1] if len(ids) else 0, dtype=np.int64)])
    return (ids[None, :] * 2 + half) * heads + np.arange(heads, dtype=np.int64)[:, None]


def segments_of(rows: np.ndarray, tokens: int, kept: int, *, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernel segments (token-row ``starts``, ``counts``) filling ``[H, rows.shape[1] * tokens]``:
    per head the ``kept`` tokens of its first ``blocks`` rows, then filler up to the end (read
    from the head's first row, at most one row's tokens at a time: never past the slab)."""
    heads, size = rows.shape[0], rows.shape[1] * tokens
    filler = size - kept
    counts = [tokens] * blocks + [tokens] * (filler // tokens) + [filler % tokens]
    if blocks:
        counts[blocks - 1] = kept - (blocks - 1) * tokens
    per_head = np.array(counts, dtype=np.int64)
    sources = np.concatenate([rows[:, :blocks], np.repeat(rows[:, :1], len(counts) - blocks, axis=1)], axis=1)
    keep = np.broadcast_to(per_head > 0, sources.shape).ravel()
    return (sources * tokens).ravel()[keep], np.broadcast_to(per_head, sources.shape).ravel()[keep].copy()


def dequantize_numpy(spec: ModelCacheSpec, hosts: list[np.ndarray], layers: Layers, out: np.ndarray, half: int) -> None:
    """Fill ``out`` (``[H, >= kept, D]``) with the K (``half`` 0) or V of the one layer in
    ``layers``, block by block, with NumPy."""
    ((blocks, kept),) = layers
    tokens = spec.block_tokens
    for j, block in enumerate(blocks):
        first = j * tokens
        count = min(tokens, kept - first)
        dequantize_host(spec, tuple(h[block.block_id, half, :, :count] for h in hosts), out[:, first : first + count])


def unpack_host(spec: ModelCacheSpec, packed: np.ndarray) -> np.ndarray:
    """``uint32 [..., D * bits / 32]`` -> ``uint8 [..., D / group, group]`` quantized values.

    MLX packs values from the low bits up and the host is little-endian, so 8-bit values are
    the bytes in order and 4-bit ones the low then the high nibble of each byte."""
    as_bytes = packed.view(np.uint8)
    if spec.kv_bits == 4:
        as_bytes = np.stack([as_bytes & 0xF, as_bytes >> 4], axis=-1)
    return as_bytes.reshape(*packed.shape[:-1], spec.head_dim // spec.kv_group_size, spec.kv_group_size)


def dequantize_host(spec: ModelCacheSpec, parts: tuple[np.ndarray, ...], out: np.ndarray) -> None:
    """``out[...] = q * scale + bias``, written straight into ``out`` (``[..., D]``; float32 or
    float16, not bfloat16). Equal to ``mx.dequantize`` on the CPU (tests check it exactly):
    the product of two halves is exact in float32, each step rounds once, as MLX's does."""
    q, scales, biases = parts
    # float32 math (NumPy's float16 loops are scalar): exact products, one rounding into ``out``
    scales, biases = scales.astype(np.float32, copy=False), biases.astype(np.float32, copy=False)
    grouped = out.reshape(*out.shape[:-1], spec.head_dim // spec.kv_group_size, spec.kv_group_size)
    np.multiply(unpack_host(spec, q), scales[..., None], out=grouped, casting="unsafe")
    np.add(grouped, biases[..., None], out=grouped, casting="unsafe")
