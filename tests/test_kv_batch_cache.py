"""The batch caches that carry a context through mlx-lm's BatchGenerator: a lone sequence keeps
its own buffers (updated in place, never copied), several are packed exactly as mlx-lm packs them."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import BatchKVCache, KVCache

from engine.kv.batch_cache import STEP, PagedBatchKVCache, PagedKVCache, capacity
from engine.kv.hot_set import HotSet
from pool import AgentBlocks

H, D = 2, 8


def address(a: mx.array) -> int:
    """Where ``a``'s data lives: equal before and after an update means it was written in place."""
    mx.eval(a)
    return np.array(a, copy=False).__array_interface__["data"][0]


def tokens(n: int, seed: int) -> mx.array:
    return mx.array(np.random.default_rng(seed).standard_normal((1, H, n, D)).astype(np.float32))


def paged(n: int, seed: int, size: int | None = None) -> PagedKVCache:
    size = size or capacity(n + 1)
    keys = mx.concatenate([tokens(n, seed), mx.zeros((1, H, size - n, D))], axis=2)
    values = mx.concatenate([tokens(n, seed + 1), mx.zeros((1, H, size - n, D))], axis=2)
    mx.eval(keys, values)
    return PagedKVCache.holding(keys, values, n)


def plain(n: int, seed: int) -> KVCache:
    cache = KVCache()
    cache.keys, cache.values, cache.offset = tokens(n, seed), tokens(n, seed + 1), n
    return cache


def valid(cache: KVCache) -> tuple[np.ndarray, np.ndarray]:
    return np.array(cache.keys[..., : cache.offset, :]), np.array(cache.values[..., : cache.offset, :])


def test_capacity_rounds_up_to_whole_steps():
    assert [capacity(n) for n in (0, 1, STEP, STEP + 1, 3 * STEP - 1)] == [STEP, STEP, STEP, 2 * STEP, 3 * STEP]


def test_a_lone_sequence_keeps_its_buffers_through_the_whole_turn():
    cache = paged(300, 0)
    keys, before = cache.keys, address(cache.keys)
    batch = PagedKVCache.merge([cache])
    assert isinstance(batch, PagedBatchKVCache) and batch.keys is keys
    assert cache.keys is None and cache.values is None  # handed on: no second reference blocks donation
    batch.update_and_fetch(tokens(12, 5), tokens(12, 6))  # the turn's prompt, then one decoded token
    batch.update_and_fetch(tokens(1, 7), tokens(1, 8))
    assert address(batch.keys) == before  # written in place: nothing copied
    batch.filter([0])  # BatchGenerator's split of a batch into the part moving to generation
    assert address(batch.keys) == before
    out = batch.extract(0)
    assert isinstance(out, PagedKVCache) and out.offset == 313 and address(out.keys) == before


def test_a_fresh_cache_grows_once_to_the_expected_size():
    batch = PagedKVCache.merge([PagedKVCache(expected_tokens=1300)])
    batch.update_and_fetch(tokens(512, 0), tokens(512, 1))
    assert batch.keys.shape[2] == capacity(1300)
    first = address(batch.keys)
    batch.update_and_fetch(tokens(512, 2), tokens(512, 3))
    assert address(batch.keys) == first


def test_several_sequences_pack_like_mlx_lm():
    lengths = (40, 300, 7)
    ours = PagedKVCache.merge([paged(n, i * 10) for i, n in enumerate(lengths)])
    theirs = BatchKVCache.merge([plain(n, i * 10) for i, n in enumerate(lengths)])
    assert ours._idx == theirs._idx == max(lengths)
    assert ours.left_padding.tolist() == theirs.left_padding.tolist()
    assert ours.offset.tolist() == theirs.offset.tolist()
    for a, b in ((ours.keys, theirs.keys), (ours.values, theirs.values)):
        assert np.array_equal(np.array(a[..., : ours._idx, :]), np.array(b))
    assert ours.keys.shape[2] > ours._idx  # room for the next token: no copy to grow
    for i, n in enumerate(lengths):
        out, ref = ours.extract(i), theirs.extract(i)
        assert out.offset == ref.offset == n
        assert all(np.array_equal(x, y) for x, y in zip(valid(out), valid(ref)))
        assert out.keys.shape[2] > n


def test_dropping_a_row_matches_mlx_lm():
    lengths = (40, 300, 7)
    ours = PagedKVCache.merge([paged(n, i) for i, n in enumerate(lengths)])
    theirs = BatchKVCache.merge([plain(n, i) for i, n in enumerate(lengths)])
    ours.filter([0, 2])
    theirs.filter([0, 2])
    assert ours.left_padding.tolist() == theirs.left_padding.tolist() and ours._idx == theirs._idx
    assert np.array_equal(np.array(ours.keys[..., : ours._idx, :]), np.array(theirs.keys))


def agent(agent_id: str, ids: list[int]) -> AgentBlocks:
    return AgentBlocks(agent_id, len(ids), list(ids))


def test_hot_set_hands_out_only_the_context_it_was_made_from():
    hot = HotSet(budget_bytes=1 << 30)
    alice = agent("alice", [1, 2, 3])
    hot.put(alice, {0: paged(3, 0)})
    assert hot.take(agent("alice", [1, 2, 4])) is None  # another context: stale, dropped
    assert "alice" not in hot and hot.nbytes == 0
    hot.put(alice, {0: paged(3, 0)})
    caches = hot.take(alice)
    assert caches is not None and caches[0].offset == 3
    assert hot.take(alice) is None  # taken: the batch owns it now
    assert (hot.num_hits, hot.num_misses) == (1, 2)


def test_hot_set_keeps_the_most_recent_within_its_budget():
    one = paged(3, 0).nbytes
    hot = HotSet(budget_bytes=2 * one)
    for name in ("a", "b", "c"):
        hot.put(agent(name, [1]), {0: paged(1, 0)})
    assert "a" not in hot and "b" in hot and "c" in hot and hot.nbytes == 2 * one
    hot.put(agent("big", [1]), {0: paged(1, 0, size=4 * STEP)})  # larger than the whole budget
    assert "big" not in hot and len(hot) == 2
    hot.drop("b")
    assert len(hot) == 1 and hot.nbytes == one
