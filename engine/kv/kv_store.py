"""The K/V tensors behind the pool's blocks.

One slab, allocated once for the whole pool, holds every block's keys and values:
``slab[block_id, 0]`` is K and ``slab[block_id, 1]`` is V, each ``[H, block_tokens, D]``.
Gathers and scatters copy through NumPy views of MLX memory: MLX's own CPU copy
kernels move ~1.1 G elements/s, a NumPy copy runs at memory speed (EXP-006).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache, RotatingKVCache

from pool import AgentBlocks, Block, ModelCacheSpec

LayerCache = KVCache | RotatingKVCache


def host_view(array: mx.array) -> np.ndarray:
    """A writable NumPy view that shares ``array``'s (evaluated) memory."""
    if array.dtype == mx.bfloat16:  # NumPy has no bfloat16: move its bits as uint16
        array = array.view(mx.uint16)
    mx.eval(array)
    return np.array(array, copy=False)


@dataclass(frozen=True, slots=True)
class CopyStats:
    """What one gather or scatter moved."""

    num_blocks: int
    num_bytes: int
    num_tokens: int
    ms: float


class KVBlockStore:
    """Owns the slab and moves K/V between blocks and mlx-lm caches."""

    def __init__(self, spec: ModelCacheSpec, total_blocks: int) -> None:
        self.spec = spec
        self.dtype: mx.Dtype = getattr(mx, spec.dtype)
        shape = (total_blocks, 2, spec.n_kv_heads, spec.block_tokens, spec.head_dim)
        self._slab = mx.zeros(shape, dtype=self.dtype)
        self._host = host_view(self._slab)
        # The slab as rows of one (block, K|V, head): each row is block_tokens x head_dim
        # contiguous values, so a gather is one mx.take over rows (memory speed, EXP-006).
        self._rows = self._slab.reshape(-1, spec.block_tokens * spec.head_dim)

    @property
    def nbytes(self) -> int:
        return self._slab.nbytes

    @property
    def rows(self) -> mx.array:
        """The slab as rows of one (block, K|V, head), ``block_tokens x head_dim`` each:
        what a gather takes from (read-only use; for profiling other gather strategies)."""
        return self._rows

    def block_arrays(self, block_id: int) -> dict[str, mx.array]:
        """MLX views of one block's K and V (what ``Block.layer_data`` carries)."""
        return {"k": self._slab[block_id, 0], "v": self._slab[block_id, 1]}

    # -- blocks -> caches ---------------------------------------------------

    def gather(self, agent_blocks: AgentBlocks) -> tuple[list[LayerCache], CopyStats]:
        """Build one mlx-lm cache per layer from the agent's blocks: one copy per byte."""
        tic = time.perf_counter()
        spec, n = self.spec, agent_blocks.total_tokens
        caches: list[LayerCache] = []
        num_blocks = num_bytes = 0
        for layer_id in range(spec.n_layers):
            kept = spec.tokens_kept(layer_id, n)
            blocks = agent_blocks.layer_blocks(layer_id)
            if len(blocks) != math.ceil(kept / spec.block_tokens):
                raise ValueError(
                    f"agent {agent_blocks.agent_id!r} layer {layer_id} holds {len(blocks)} "
                    f"blocks but {kept} tokens need {math.ceil(kept / spec.block_tokens)}"
                )
            keys, values = self._gather_layer(blocks, kept)
            caches.append(self.make_cache(layer_id, keys, values, n))
            num_blocks += len(blocks)
            num_bytes += keys.nbytes + values.nbytes
        mx.eval([(c.keys, c.values) for c in caches])
        ms = (time.perf_counter() - tic) * 1000
        return caches, CopyStats(num_blocks, num_bytes, n, ms)

    def _gather_layer(self, blocks: list[Block], kept: int) -> tuple[mx.array, mx.array]:
        spec = self.spec
        ids = np.fromiter((b.block_id for b in blocks), dtype=np.uint32, count=len(blocks))
        kv = np.arange(2, dtype=np.uint32)[:, None, None]
        heads = np.arange(spec.n_kv_heads, dtype=np.uint32)[None, :, None]
        # Row order (K|V, head, block): after the take, tokens run contiguously per head.
        rows = ((ids[None, None, :] * 2 + kv) * spec.n_kv_heads + heads).ravel()
        taken = mx.take(self._rows, mx.array(rows), axis=0)
        taken = taken.reshape(2, 1, spec.n_kv_heads, len(blocks) * spec.block_tokens, spec.head_dim)
        return taken[0, :, :, :kept], taken[1, :, :, :kept]

    def make_cache(self, layer_id: int, keys: mx.array, values: mx.array, n: int) -> LayerCache:
        """An mlx-lm cache for one layer holding ``keys``/``values`` (``[1, H, T, D]``) of a
        context of ``n`` tokens (a sliding layer's: its window, in temporal order)."""
        if self.spec.is_sliding(layer_id):
            cache = RotatingKVCache(max_size=self.spec.sliding_window, keep=0)
            # Temporal order, full: what mlx-lm's own cache holds after trimming.
            cache.keys, cache.values = keys, values
            cache.offset, cache._idx = n, keys.shape[2]
            return cache
        cache = KVCache()
        cache.keys, cache.values, cache.offset = keys, values, n
        return cache

    # -- caches -> blocks ---------------------------------------------------

    def write(self, block: Block, keys: np.ndarray, values: np.ndarray, start: int) -> None:
        """Copy ``[H, T, D]`` keys/values into ``block`` from its token ``start`` on."""
        count = keys.shape[1]
        assert start + count <= self.spec.block_tokens, (start, count)
        self._host[block.block_id, 0, :, start : start + count] = keys
        self._host[block.block_id, 1, :, start : start + count] = values
        block.layer_data.update(self.block_arrays(block.block_id))

    def copy_block(self, source_id: int, target_id: int) -> None:
        """Copy one block's K/V into another (copy-on-write of a shared block)."""
        self._host[target_id] = self._host[source_id]

    def fill_random(self, block_ids: list[int], seed: int = 0) -> None:
        """Random K/V for synthetic benchmarks (EXP-006): no model needed."""
        rng = np.random.default_rng(seed)
        for block_id in block_ids:
            data = rng.standard_normal(self._host.shape[1:], dtype=np.float32)
            if self.dtype == mx.bfloat16:  # the top half of a float32 is its bfloat16
                self._host[block_id] = (data.view(np.uint32) >> 16).astype(np.uint16)
            else:
                self._host[block_id] = data.astype(self._host.dtype, copy=False)


def cache_host_arrays(cache: Any) -> tuple[np.ndarray, np.ndarray]:
    """``[H, T, D]`` host views of an extracted single-sequence cache, in temporal order."""
    keys, values = cache.keys, cache.values
    if isinstance(cache, KVCache):
        keys, values = keys[..., : cache.offset, :], values[..., : cache.offset, :]
    return host_view(keys)[0], host_view(values)[0]
