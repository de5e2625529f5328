"""The K/V tensors behind the pool's blocks.

One slab per part of the block format (``engine.kv.kv_format``), allocated once for the
whole pool: ``slab[block_id, 0]`` is K and ``slab[block_id, 1]`` is V, each
``[H, block_tokens, C]``. Float blocks have one part; 8- and 4-bit blocks three (packed
values, scales, biases), which the gather dequantizes into float caches in one pass.
Writes copy through NumPy views of MLX memory: MLX's own CPU copy kernels move ~1.1 G
elements/s, a NumPy copy runs at memory speed (EXP-006).
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

from .kv_format import KVTokens, decode, dequantize_host, encode, host_view, parts_of

LayerCache = KVCache | RotatingKVCache
__all__ = ["CopyStats", "KVBlockStore", "KVTokens", "LayerCache", "cache_arrays", "host_view"]


@dataclass(frozen=True, slots=True)
class CopyStats:
    """What one gather or scatter moved."""

    num_blocks: int
    num_bytes: int
    num_tokens: int
    ms: float


class KVBlockStore:
    """Owns the slabs and moves K/V between blocks and mlx-lm caches."""

    def __init__(self, spec: ModelCacheSpec, total_blocks: int, *, host_dequantize: bool | None = None) -> None:
        self.spec = spec
        # Quantized gathers on the CPU dequantize with NumPy straight into the cache (6x faster
        # than mx.dequantize's CPU kernel, measured); GPUs keep MLX ops on the device. NumPy has
        # no bfloat16. None: chosen by mx.default_device().
        if host_dequantize is None:
            host_dequantize = mx.default_device() == mx.cpu
        self.host_dequantize = host_dequantize and spec.quantized and spec.dtype != "bfloat16"
        self.dtype: mx.Dtype = getattr(mx, spec.dtype)  # what gathers give back
        self.parts = parts_of(spec)
        self._slabs = [mx.zeros((total_blocks, 2, spec.n_kv_heads, spec.block_tokens, p.dim), dtype=p.dtype)
                       for p in self.parts]
        self._hosts = [host_view(slab) for slab in self._slabs]
        # Each slab as rows of one (block, K|V, head): block_tokens x dim contiguous values,
        # so a gather is one mx.take over rows per part (memory speed, EXP-006).
        self._rows = [slab.reshape(-1, spec.block_tokens * p.dim) for slab, p in zip(self._slabs, self.parts)]

    @property
    def nbytes(self) -> int:
        return sum(slab.nbytes for slab in self._slabs)

    @property
    def rows(self) -> mx.array:
        """The (first part's) slab as rows of one (block, K|V, head), ``block_tokens x dim``
        each: what a gather takes from (read-only use; for profiling other gather strategies)."""
        return self._rows[0]

    def block_arrays(self, block_id: int) -> dict[str, mx.array]:
        """One block's float K and V (what ``Block.layer_data`` carries): slab views for
        float blocks, lazily dequantized arrays for quantized ones."""
        return {name: decode(self.spec, tuple(slab[block_id, kv] for slab in self._slabs))
                for kv, name in enumerate(("k", "v"))}

    # -- blocks -> caches ---------------------------------------------------

    def gather(self, agent_blocks: AgentBlocks) -> tuple[list[LayerCache], CopyStats]:
        """Build one mlx-lm cache per layer from the agent's blocks: one copy per byte
        (quantized blocks: the take moves packed bytes, one dequantize writes the floats)."""
        tic = time.perf_counter()
        spec, n = self.spec, agent_blocks.total_tokens
        caches: list[LayerCache] = []
        num_blocks = num_bytes = 0
        for layer_id in range(spec.n_layers):
            blocks, kept = self._layer_blocks(agent_blocks, layer_id)
            if self.host_dequantize:
                kv = self._dequantize_layer_host(blocks, kept)
            else:
                kv = decode(spec, self._take_layer(blocks, kept))  # [2, 1, H, kept, D]
            caches.append(self.make_cache(layer_id, kv[0], kv[1], n))
            num_blocks += len(blocks)
            num_bytes += 2 * kv[0].nbytes
        mx.eval([(c.keys, c.values) for c in caches])
        ms = (time.perf_counter() - tic) * 1000
        return caches, CopyStats(num_blocks, num_bytes, n, ms)

    def read_layers(self, agent_blocks: AgentBlocks) -> list[KVTokens[mx.array]]:
        """Each layer's K/V as stored (quantized stays quantized): ``[H, kept, C]`` per part."""
        layers = []
        for layer_id in range(self.spec.n_layers):
            taken = self._take_layer(*self._layer_blocks(agent_blocks, layer_id))
            layers.append(KVTokens(tuple(t[0, 0] for t in taken), tuple(t[1, 0] for t in taken)))
        mx.eval([p for layer in layers for p in layer.keys + layer.values])
        return layers

    def read_tokens(self, blocks: list[Block], start: int, stop: int) -> KVTokens[np.ndarray]:
        """A copy of tokens ``[start, stop)`` of a layer's ``blocks`` (in order), as stored."""
        def part(host: np.ndarray, kv: int) -> np.ndarray:
            return np.concatenate([host[b.block_id, kv, :, : b.num_tokens] for b in blocks], axis=1)[:, start:stop]

        return KVTokens(tuple(part(h, 0) for h in self._hosts), tuple(part(h, 1) for h in self._hosts))

    def _layer_blocks(self, agent_blocks: AgentBlocks, layer_id: int) -> tuple[list[Block], int]:
        spec = self.spec
        kept = spec.tokens_kept(layer_id, agent_blocks.total_tokens)
        blocks = agent_blocks.layer_blocks(layer_id)
        if len(blocks) != math.ceil(kept / spec.block_tokens):
            raise ValueError(
                f"agent {agent_blocks.agent_id!r} layer {layer_id} holds {len(blocks)} "
                f"blocks but {kept} tokens need {math.ceil(kept / spec.block_tokens)}"
            )
        return blocks, kept

    def _take_layer(self, blocks: list[Block], kept: int) -> tuple[mx.array, ...]:
        """Per part ``[2, 1, H, kept, C]``: the layer's K|V rows, one ``mx.take`` per part."""
        spec = self.spec
        ids = np.fromiter((b.block_id for b in blocks), dtype=np.uint32, count=len(blocks))
        kv = np.arange(2, dtype=np.uint32)[:, None, None]
        heads = np.arange(spec.n_kv_heads, dtype=np.uint32)[None, :, None]
        # Row order (K|V, head, block): after the take, tokens run contiguously per head.
        rows = mx.array(((ids[None, None, :] * 2 + kv) * spec.n_kv_heads + heads).ravel())
        tokens = len(blocks) * spec.block_tokens
        return tuple(mx.take(r, rows, axis=0).reshape(2, 1, spec.n_kv_heads, tokens, p.dim)[:, :, :, :kept]
                     for r, p in zip(self._rows, self.parts))

    def _dequantize_layer_host(self, blocks: list[Block], kept: int) -> mx.array:
        """``[2, 1, H, kept, D]`` floats: packed rows taken by NumPy, dequantized into the output."""
        spec = self.spec
        ids = np.fromiter((b.block_id for b in blocks), dtype=np.intp, count=len(blocks))
        out = mx.zeros((2, 1, spec.n_kv_heads, kept, spec.head_dim), dtype=self.dtype)
        target = host_view(out)
        # [K|V, H, blocks, T, C] -> tokens run contiguously per head after the reshape
        parts = tuple(h[ids].transpose(1, 2, 0, 3, 4).reshape(2, 1, spec.n_kv_heads, -1, h.shape[-1])[:, :, :, :kept]
                      for h in self._hosts)
        dequantize_host(spec, parts, target)
        return out

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

    def encode(self, keys: mx.array, values: mx.array) -> KVTokens[np.ndarray]:
        """Float ``[H, T, D]`` K/V in this store's block format (a token is quantized once, here)."""
        return encode(self.spec, keys, values)

    def write(self, block: Block, tokens: KVTokens[np.ndarray], start: int) -> None:
        """Copy stored-format ``tokens`` into ``block`` from its token ``start`` on."""
        count = tokens.num_tokens
        assert start + count <= self.spec.block_tokens, (start, count)
        for host, keys, values in zip(self._hosts, tokens.keys, tokens.values):
            host[block.block_id, 0, :, start : start + count] = keys
            host[block.block_id, 1, :, start : start + count] = values
        block.layer_data.update(self.block_arrays(block.block_id))

    def copy_block(self, source_id: int, target_id: int) -> None:
        """Copy one block's K/V into another (copy-on-write of a shared block)."""
        for host in self._hosts:
            host[target_id] = host[source_id]

    def copy_from(self, other: KVBlockStore, block_id: int) -> None:
        """Copy one block's stored K/V from another store of the same format (tests, tools)."""
        assert other.spec == self.spec, (other.spec, self.spec)
        for mine, theirs in zip(self._hosts, other._hosts):
            mine[block_id] = theirs[block_id]

    def fill_random(self, block_ids: list[int], seed: int = 0) -> None:
        """Random K/V for synthetic benchmarks (EXP-006): no model needed."""
        rng = np.random.default_rng(seed)
        shape = (2, self.spec.n_kv_heads, self.spec.block_tokens, self.spec.head_dim)
        for block_id in block_ids:
            data = rng.standard_normal(shape, dtype=np.float32)
            if self.spec.quantized:
                kv = mx.array(data).astype(self.dtype)
                tokens = self.encode(kv[0], kv[1])
                for host, keys, values in zip(self._hosts, tokens.keys, tokens.values):
                    host[block_id, 0], host[block_id, 1] = keys, values
            elif self.dtype == mx.bfloat16:  # the top half of a float32 is its bfloat16
                self._hosts[0][block_id] = (data.view(np.uint32) >> 16).astype(np.uint16)
            else:
                self._hosts[0][block_id] = data.astype(self._hosts[0].dtype, copy=False)


def cache_arrays(cache: Any) -> tuple[mx.array, mx.array]:
    """``[H, T, D]`` K/V of an extracted single-sequence cache, in temporal order (evaluated)."""
    keys, values = cache.keys, cache.values
    if isinstance(cache, KVCache):
        keys, values = keys[..., : cache.offset, :], values[..., : cache.offset, :]
    mx.eval(keys, values)
    return keys[0], values[0]
