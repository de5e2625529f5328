"""Writing turns into blocks when blocks are shared (no model: synthetic K/V in a small slab).

A shared block is never written: a global layer's shared partial block is copied first
(copy-on-write), a sliding layer lets go of its shared blocks and re-packs into its own.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from engine.kv.block_writer import BlockWriter
from engine.kv.batch_cache import cache_arrays
from engine.kv.kv_store import KVBlockStore
from pool import AgentBlocks, BlockPool, ModelCacheSpec

SPEC = ModelCacheSpec(n_layers=2, n_kv_heads=1, head_dim=2, dtype="float32", block_tokens=4,
                      layer_types=("global", "sliding"), sliding_window=8)


def kv(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """K/V whose values name their token position (V = -K), ``[H, T, D]``."""
    keys = np.repeat(np.arange(start, stop, dtype=np.float32)[None, :, None], SPEC.head_dim, axis=2)
    return keys, -keys


def write(writer: BlockWriter, agent: AgentBlocks, total: int) -> None:
    """Write a context of ``total`` tokens: the global layer's new tokens, the sliding window."""
    reserved: dict = {}
    writer.reserve(agent, reserved, total)
    spans = [kv(agent.total_tokens, total), kv(max(0, total - SPEC.sliding_window), total)]
    layers = [writer.store.encode(mx.array(k), mx.array(v)) for k, v in spans]
    writer.write_layers(agent, reserved, layers, total, list(range(total)))


def positions(store: KVBlockStore, agent: AgentBlocks, layer_id: int) -> list[float]:
    caches, _ = store.gather(agent)
    return np.array(cache_arrays(caches[layer_id])[0])[0, :, 0].tolist()


def test_a_shared_block_is_never_written():
    pool = BlockPool(SPEC, 32)
    store = KVBlockStore(SPEC, pool.total_blocks)
    writer = BlockWriter(pool, store)
    source = AgentBlocks("source")
    write(writer, source, 6)  # global: one full block, one partial; sliding: 6 tokens in 2 blocks
    fork = pool.fork(source, "fork")
    before = {b.block_id: np.array(store.block_arrays(b.block_id)["k"]) for b in fork.all_blocks()}

    write(writer, source, 10)
    assert writer.copied.num_blocks == 1  # the global layer's shared partial block
    for block in fork.all_blocks():  # the fork's blocks are as they were
        assert np.array_equal(np.array(store.block_arrays(block.block_id)["k"]), before[block.block_id])
    assert positions(store, fork, 0) == list(range(6))
    assert positions(store, fork, 1) == list(range(6))
    assert positions(store, source, 0) == list(range(10))
    assert positions(store, source, 1) == list(range(2, 10))
    assert source.layer_blocks(0)[0] is fork.layer_blocks(0)[0]  # the full block stays shared
    pool.check_invariants()

    write(writer, fork, 7)  # its partial block is its own now: written in place, nothing copied
    assert writer.copied.num_blocks == 0
    assert positions(store, fork, 0) == list(range(7))
    source.check(SPEC)
    fork.check(SPEC)
    pool.check_invariants()


def test_reservation_counts_the_copy_of_a_shared_partial_block():
    pool = BlockPool(SPEC, 32)
    writer = BlockWriter(pool, KVBlockStore(SPEC, pool.total_blocks))
    source = AgentBlocks("source")
    write(writer, source, 6)
    assert writer.blocks_needed(source, {}, 7) == {}  # room left in its own partial blocks
    pool.fork(source, "fork")
    # Global: the shared partial block needs a private copy; sliding: both blocks are shared.
    assert writer.blocks_needed(source, {}, 7) == {0: 1, 1: 2}


def test_a_caches_arrays_are_views_of_its_buffers_not_copies() -> None:
    """The write-back reads a turn's new tokens straight from the cache's buffer: a copy of the
    whole context per layer (MLX's integer indexing is a gather) cost it 60-300 ms a turn."""
    from engine.kv.batch_cache import PagedKVCache
    from engine.kv.kv_format import host_view

    buffer_k, buffer_v = mx.zeros((1, 2, 64, 4)), mx.ones((1, 2, 64, 4))
    cache = PagedKVCache.holding(buffer_k, buffer_v, 40)
    keys, values = cache_arrays(cache)
    assert keys.shape == (2, 40, 4) and values.shape == (2, 40, 4)
    assert np.shares_memory(host_view(keys), host_view(buffer_k))
    assert np.shares_memory(host_view(values[:, 30:]), host_view(buffer_v))
