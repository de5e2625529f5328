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
from collections.abc import Iterable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache, RotatingKVCache

from pool import AgentBlocks, Block, ModelCacheSpec

from . import host_dequant
from .batch_cache import PagedKVCache, capacity
from .dequant_paths import KINDS, as_kernel_array, block_rows, dequantize_numpy, padded_rows, segments, segments_of
from .kv_format import KVTokens, decode, encode, host_view, parts_of

LayerCache = KVCache | RotatingKVCache
__all__ = ["CopyStats", "KVBlockStore", "KVTokens", "LayerCache", "host_view"]


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
        # Quantized gathers on the CPU dequantize on the host straight into the caches (a fused
        # numba kernel, probed; NumPy without it); GPUs keep MLX ops on the device. None:
        # chosen by mx.default_device().
        if host_dequantize is None:
            host_dequantize = mx.default_device() == mx.cpu
        self.dequant = host_dequant.choose(spec) if host_dequantize and spec.quantized else None
        if self.dequant is not None and self.dequant.kernel is None and spec.dtype == "bfloat16":
            self.dequant = None  # NumPy has no bfloat16: MLX's ops then
        self.host_dequantize = self.dequant is not None
        self._kind = KINDS[spec.dtype]
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
    def float_nbytes(self) -> int:
        """What gathering every block would give back: the pool's K/V as floats."""
        spec = self.spec
        return self._slabs[0].shape[0] * 2 * spec.n_kv_heads * spec.block_tokens * spec.head_dim * spec.itemsize

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

    def gather(self, agent_blocks: AgentBlocks, *, expected_tokens: int = 0) -> tuple[list[LayerCache], CopyStats]:
        """One mlx-lm cache per layer from the agent's blocks (see ``gather_layers``)."""
        caches, stats = self.gather_layers(agent_blocks, range(self.spec.n_layers), expected_tokens=expected_tokens)
        return [caches[layer_id] for layer_id in range(self.spec.n_layers)], stats

    def gather_layers(self, agent_blocks: AgentBlocks, layer_ids: Iterable[int], *,
                      expected_tokens: int = 0) -> tuple[dict[int, LayerCache], CopyStats]:
        """Caches for ``layer_ids`` from the agent's blocks, every byte copied once.

        A global layer's K and V each get a buffer of their own with room for a context of
        ``expected_tokens`` (``engine.kv.batch_cache``: the batch updates it in place);
        sliding layers get their window in temporal order. Float blocks are taken by
        ``mx.take`` over the slab's rows; quantized ones dequantized on the host (CPU) or
        taken packed and dequantized by MLX ops (GPUs).
        """
        tic = time.perf_counter()
        spec, n = self.spec, agent_blocks.total_tokens
        wanted = {layer_id: self._layer_blocks(agent_blocks, layer_id) for layer_id in layer_ids}
        size = capacity(max(n, expected_tokens))  # the engine asks for room; the seed API for none
        caches: dict[int, LayerCache] = {}
        for layer_id, (blocks, kept) in wanted.items():
            if not spec.is_sliding(layer_id):
                keys, values = (self._gather_half(blocks, kept, half, size) for half in (0, 1))
                caches[layer_id] = PagedKVCache.holding(keys, values, n)
        sliding = [layer_id for layer_id in wanted if spec.is_sliding(layer_id)]
        windows = [wanted[layer_id] for layer_id in sliding]
        kv = self._dequantize_host(windows) if self.host_dequantize else self._take_float(windows)
        for layer_id, (keys, values) in zip(sliding, kv):
            caches[layer_id] = self.make_cache(layer_id, keys, values, n)
        mx.eval([(c.keys, c.values) for c in caches.values()])
        ms = (time.perf_counter() - tic) * 1000
        num_tokens = sum(kept for _, kept in wanted.values())
        num_bytes = num_tokens * 2 * spec.n_kv_heads * spec.head_dim * spec.itemsize
        return caches, CopyStats(sum(len(blocks) for blocks, _ in wanted.values()), num_bytes, n, ms)

    def _gather_half(self, blocks: list[Block], kept: int, half: int, size: int) -> mx.array:
        """A global layer's K (``half`` 0) or V as ``[1, H, size, D]``, its first ``kept``
        tokens from ``blocks`` (the rest is room to grow: whatever rows fill it)."""
        spec, heads = self.spec, self.spec.n_kv_heads
        rows = padded_rows(spec, blocks, half, size // spec.block_tokens)
        if self.host_dequantize:
            assert self.dequant is not None
            out = mx.zeros((1, heads, size, spec.head_dim), dtype=self.dtype)
            target = host_view(out).reshape(heads, size, spec.head_dim)
            if self.dequant.kernel is not None:
                starts, counts = segments_of(rows, spec.block_tokens, kept, blocks=len(blocks))
                q, scales, biases = (h.reshape(-1, h.shape[-1]) for h in self._hosts)
                self.dequant.kernel(self._kind, spec.kv_bits, spec.kv_group_size, q.view(np.uint8),
                                    as_kernel_array(scales), as_kernel_array(biases), starts, counts,
                                    as_kernel_array(target.reshape(-1)))
            else:
                dequantize_numpy(spec, self._hosts, [(blocks, kept)], target, half)
            return out
        index = mx.array(rows.reshape(-1).astype(np.uint32))
        parts = tuple(mx.take(r, index, axis=0).reshape(1, heads, size, p.dim) for r, p in zip(self._rows, self.parts))
        return decode(spec, parts)

    def read_layers(self, agent_blocks: AgentBlocks) -> list[KVTokens[mx.array]]:
        """Each layer's K/V as stored (quantized stays quantized): ``[H, kept, C]`` per part."""
        layers = [self._layer_blocks(agent_blocks, layer_id) for layer_id in range(self.spec.n_layers)]
        out = [KVTokens(tuple(p[0] for p in keys), tuple(p[0] for p in values))
               for keys, values in self._take_parts(layers)]
        mx.eval([p for layer in out for p in layer.keys + layer.values])
        return out

    def read_tokens(self, blocks: list[Block], start: int, stop: int) -> KVTokens[np.ndarray]:
        """A copy of tokens ``[start, stop)`` of a layer's ``blocks`` (in order), as stored."""
        first, pieces, offset = 0, [], 0
        for block in blocks:  # only the blocks that hold part of [start, stop)
            if offset + block.num_tokens > start and offset < stop:
                if not pieces:
                    first = offset
                pieces.append(block)
            offset += block.num_tokens
        if not pieces:  # an empty range
            pieces, first, start = blocks[:1], 0, 0
            stop = 0

        def part(host: np.ndarray, kv: int) -> np.ndarray:
            held = np.concatenate([host[b.block_id, kv, :, : b.num_tokens] for b in pieces], axis=1)
            return held[:, start - first : stop - first]

        return KVTokens(tuple(part(h, 0) for h in self._hosts), tuple(part(h, 1) for h in self._hosts))

    def read_float(self, blocks: list[Block], start: int, stop: int) -> tuple[mx.array, mx.array]:
        """Tokens ``[start, stop)`` of a layer's ``blocks`` as a gather gives them: float
        ``[1, H, stop - start, D]`` K and V (dequantized when the blocks are quantized)."""
        tokens = self.read_tokens(blocks, start, stop)
        keys, values = (decode(self.spec, tuple(mx.array(p) for p in parts)) for parts in (tokens.keys, tokens.values))
        return keys[None], values[None]

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

    def _take_parts(self, layers: list[tuple[list[Block], int]]) -> list[tuple[tuple[mx.array, ...], tuple[mx.array, ...]]]:
        """Per layer, K's and V's stored parts ``[1, H, kept, C]``: views into one ``mx.take``
        per part over the slab's rows, ordered (layer, K|V, head, block) so that each head's
        tokens run contiguously."""
        spec, heads = self.spec, self.spec.n_kv_heads
        if not layers:
            return []
        rows = mx.array(block_rows(spec, layers).astype(np.uint32))
        taken = [mx.take(r, rows, axis=0) for r in self._rows]
        out = []
        start = 0
        for blocks, kept in layers:
            count, tokens = heads * len(blocks), len(blocks) * spec.block_tokens

            def view(first: int) -> tuple[mx.array, ...]:
                # slice then reshape a contiguous range: a view; [:kept] last (a strided view)
                return tuple(t[first : first + count].reshape(1, heads, tokens, p.dim)[:, :, :kept]
                             for t, p in zip(taken, self.parts))

            out.append((view(start), view(start + count)))
            start += 2 * count
        return out

    def _take_float(self, layers: list[tuple[list[Block], int]]) -> list[tuple[mx.array, mx.array]]:
        """Per layer, float K and V ``[1, H, kept, D]`` (quantized parts dequantized by MLX ops)."""
        return [(decode(self.spec, keys), decode(self.spec, values)) for keys, values in self._take_parts(layers)]

    def _dequantize_host(self, layers: list[tuple[list[Block], int]]) -> list[tuple[mx.array, mx.array]]:
        """Per (sliding) layer, float K and V ``[1, H, kept, D]``: views into one buffer filled
        on the host from the packed slabs, in (layer, K|V, head, token) order."""
        spec, heads, dim = self.spec, self.spec.n_kv_heads, self.spec.head_dim
        if not layers:
            return []
        assert self.dequant is not None
        sizes = [heads * kept * dim for _, kept in layers]
        out = mx.zeros((2 * sum(sizes),), dtype=self.dtype)
        target = host_view(out)
        if self.dequant.kernel is not None:
            starts, counts = segments(spec, layers)
            q, scales, biases = (h.reshape(-1, h.shape[-1]) for h in self._hosts)
            self.dequant.kernel(self._kind, spec.kv_bits, spec.kv_group_size, q.view(np.uint8),
                                as_kernel_array(scales), as_kernel_array(biases), starts, counts,
                                as_kernel_array(target))
        else:
            start = 0
            for (blocks, kept), size in zip(layers, sizes):
                for half in (0, 1):
                    segment = target[start : start + size].reshape(heads, kept, dim)
                    dequantize_numpy(spec, self._hosts, [(blocks, kept)], segment, half)
                    start += size
        kv: list[tuple[mx.array, mx.array]] = []
        start = 0
        for (_, kept), size in zip(layers, sizes):
            kv.append((out[start : start + size].reshape(1, heads, kept, dim),
                       out[start + size : start + 2 * size].reshape(1, heads, kept, dim)))
            start += 2 * size
        return kv

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

