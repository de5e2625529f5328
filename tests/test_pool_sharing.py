"""Shared blocks: reference counts, content hashes, cached free blocks, forks, copy-on-write."""

from __future__ import annotations

import pytest

from pool import BlockHasher, BlockPool
from tests.pool_builders import BT, PROMPT, global_spec, mixed_spec, write_context

# -- hashes ----------------------------------------------------------------------


def test_hash_chains_the_prefix_and_the_model() -> None:
    hasher = BlockHasher("model-a", BT)
    same_block_twice = [1, 2, 3, 4, 1, 2, 3, 4, 9]
    first, second = hasher.block_hashes(same_block_twice)  # the partial block has no hash
    assert first != second, "equal blocks after different prefixes must differ"
    assert hasher.block_hashes([1, 2, 3, 4]) == [first]
    assert hasher.block_hash(hasher.seed_hash, [1, 2, 3, 4]) == first
    assert BlockHasher("model-b", BT).block_hashes([1, 2, 3, 4]) != [first]
    assert hasher.block_hashes(same_block_twice, num_blocks=1) == [first]


def test_hash_rejects_bad_input() -> None:
    hasher = BlockHasher("m", BT)
    with pytest.raises(ValueError, match="a full block has 4 token ids, got 3"):
        hasher.block_hash(hasher.seed_hash, [1, 2, 3])
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 2\*\*63\), got -1"):
        hasher.block_hash(hasher.seed_hash, [1, 2, 3, -1])


def test_register_full_blocks_hashes_only_full_aligned_blocks() -> None:
    pool = BlockPool(global_spec(), 10)
    agent = write_context(pool, "a", PROMPT)
    hashes = pool.hasher.block_hashes(PROMPT)
    for layer_id in (0, 1):
        assert [b.block_hash for b in agent.layer_blocks(layer_id)] == [*hashes, None]
    pool.check_invariants()


def test_register_hash_rejects_blocks_that_cannot_be_named() -> None:
    pool = BlockPool(global_spec(), 10)
    full, partial = pool.allocate(2, 0, "a")
    full.token_start, full.num_tokens = 0, BT
    partial.token_start, partial.num_tokens = BT, 1
    with pytest.raises(ValueError, match=f"block {partial.block_id} holds 1/4 tokens"):
        pool.register_hash(partial, 1)
    unaligned = pool.allocate(1, 0, "a")[0]
    unaligned.token_start, unaligned.num_tokens = 2, BT
    with pytest.raises(ValueError, match="starts at token 2, not a multiple of 4"):
        pool.register_hash(unaligned, 1)
    assert pool.register_hash(full, 7) is full
    assert pool.register_hash(full, 7) is full  # again: nothing changes
    with pytest.raises(ValueError, match="already has a different hash"):
        pool.register_hash(full, 8)
    pool.free([partial])
    with pytest.raises(ValueError, match=f"block {partial.block_id} is free"):
        pool.register_hash(partial, 9)
    pool.check_invariants()


def test_register_full_blocks_deduplicates_equal_content() -> None:
    pool = BlockPool(global_spec(1), 10)
    first = write_context(pool, "a", PROMPT)
    # Written without a lookup (both prefilled at once): the same two full blocks again.
    second = write_context(pool, "b", PROMPT)
    assert [b.block_id for b in second.layer_blocks(0)[:2]] == [b.block_id for b in first.layer_blocks(0)[:2]]
    assert pool.used_blocks() == 2 + 2  # shared full blocks once, each agent's own partial block
    assert pool.num_shared_blocks() == 2
    stats = pool.register_full_blocks(second)
    assert (stats.num_hashed, stats.num_deduplicated) == (0, 0)
    pool.check_invariants()


# -- reference counts ------------------------------------------------------------


def test_shared_block_is_freed_only_by_its_last_holder() -> None:
    pool = BlockPool(global_spec(1), 6)
    block = pool.allocate(1, 0, "a")[0]
    assert pool.hold([block], "b") == 1
    assert (block.holder_ids, block.ref_count, pool.is_shared(block)) == (("a", "b"), 2, True)
    assert (pool.used_blocks(), pool.agent_usage()) == (1, {"a": 1, "b": 1})
    assert pool.free([block], "a") == 1
    assert (block.holder_ids, pool.used_blocks(), pool.free_blocks()) == (("b",), 1, 5)
    assert pool.owner_of(block.block_id) == "b"
    assert pool.free_agent_blocks("b") == 1
    assert (block.is_free, pool.used_blocks(), pool.free_blocks()) == (True, 0, 6)
    pool.check_invariants()


def test_free_of_a_shared_block_must_say_whose_reference() -> None:
    pool = BlockPool(global_spec(1), 6)
    block = pool.allocate(1, 0, "a")[0]
    pool.hold([block], "b")
    with pytest.raises(ValueError, match=f"block {block.block_id} is held by 'a', 'b'; pass agent_id"):
        pool.free([block])
    with pytest.raises(ValueError, match=f"block {block.block_id} is held by 'a', 'b', not 'c'"):
        pool.free([block], "c")
    assert block.holder_ids == ("a", "b")


def test_hold_rejects_empty_free_blocks_and_second_references() -> None:
    pool = BlockPool(global_spec(1), 6)
    block = pool.allocate(1, 0, "a")[0]
    with pytest.raises(ValueError, match=f"agent 'a' already holds block {block.block_id}"):
        pool.hold([block], "a")
    pool.free([block])
    with pytest.raises(ValueError, match=f"block {block.block_id} is free and empty: nothing to share"):
        pool.hold([block], "b")
    pool.check_invariants()


def test_snapshot_shows_holders_and_cached_blocks() -> None:
    pool = BlockPool(global_spec(1), 10)
    source = write_context(pool, "a", PROMPT)
    pool.fork(source, "b")
    snap = pool.snapshot()
    assert snap.used_blocks() == 3 and snap.free_blocks() == 7
    assert {info.holder_ids for info in snap.blocks} == {("a", "b")}
    assert all(info.ref_count == 2 and info.agent_id == "a" for info in snap.blocks)
    assert (snap.num_shared_blocks(), snap.num_saved_blocks()) == (3, 3)
    assert snap.agent_usage() == {"a": 3, "b": 3}
    pool.free_agent_blocks("a")
    pool.free_agent_blocks("b")
    snap = pool.snapshot()
    assert (snap.used_blocks(), snap.num_cached_blocks()) == (0, 2)
    assert all(info.holder_ids == () and info.agent_id is None for info in snap.cached_blocks)
    assert {info.block_hash for info in snap.cached_blocks} == set(pool.hasher.block_hashes(PROMPT))


# -- cached free blocks and lookups -------------------------------------------------


def test_closed_agents_full_blocks_stay_findable() -> None:
    pool = BlockPool(global_spec(), 10)
    write_context(pool, "a", PROMPT)
    pool.free_agent_blocks("a")
    assert (pool.used_blocks(), pool.free_blocks()) == (0, 10)
    assert (pool.num_cached_blocks(), pool.num_cached_blocks("global"), pool.num_cached_blocks("sliding")) == (4, 4, 0)
    match = pool.lookup_prefix(PROMPT + [99])
    assert (match.num_blocks, match.num_tokens, match.num_cached_blocks) == (2, 8, 4)
    assert match.token_ids == tuple(PROMPT[:8])
    agent = pool.acquire_prefix("b", match)
    assert (agent.total_tokens, agent.token_ids, agent.num_blocks()) == (8, PROMPT[:8], 4)
    assert (pool.used_blocks(), pool.free_blocks(), pool.num_cached_blocks()) == (4, 6, 0)
    assert all(b.holder_ids == ("b",) for b in agent.all_blocks())
    agent.check(pool.spec)
    pool.check_invariants()


def test_lookup_stops_at_the_first_missing_block() -> None:
    pool = BlockPool(global_spec(1), 10)
    write_context(pool, "a", PROMPT)
    other_second_block = PROMPT[:4] + [0, 0, 0, 0] + PROMPT[8:]
    assert pool.lookup_prefix(other_second_block).num_blocks == 1
    assert pool.lookup_prefix([0] + PROMPT).num_blocks == 0
    assert pool.lookup_prefix(PROMPT[:7]).num_blocks == 1  # the query's partial block never hits
    empty = pool.lookup_prefix([])
    assert (empty.num_blocks, empty.layer_block_ids, empty.num_query_blocks) == (0, ((),), 0)


def test_another_model_never_hits() -> None:
    pool = BlockPool(global_spec(1), 10, model_key="model-a")
    write_context(pool, "a", PROMPT)
    theirs = BlockHasher("model-b", BT).block_hashes(PROMPT)
    assert not set(theirs) & {b.block_hash for b in pool.snapshot().blocks if b.block_hash}


def test_sliding_layer_shortens_the_hit_to_what_it_holds() -> None:
    pool = BlockPool(mixed_spec(window=8), 20)
    tokens = list(range(100, 120))  # five full blocks
    # The sliding layer let blocks 0 and 1 go (uncached); it holds blocks 2..4.
    write_context(pool, "a", tokens, first_index={1: 2})
    match = pool.lookup_prefix(tokens + [0])
    assert (match.num_blocks, match.num_global_blocks) == (5, 5)
    assert [pool.block(i).token_start for i in match.layer_block_ids[1]] == [12, 16]
    assert len(match.layer_block_ids[0]) == 5
    # A query that leaves the prompt after block 1: its window needs blocks 0 and 1.
    short = pool.lookup_prefix(tokens[:8] + [0] * 8)
    assert (short.num_blocks, short.num_global_blocks) == (0, 2)
    # After block 3 the window needs blocks 2 and 3, which are there.
    cut = pool.lookup_prefix(tokens[:16] + [0] * 4)
    assert (cut.num_blocks, [len(ids) for ids in cut.layer_block_ids]) == (4, [4, 2])


def test_unaligned_window_needs_the_block_it_starts_in() -> None:
    tokens = list(range(100, 112))  # three full blocks; a cut after them keeps tokens 6..11
    for first_index, expected in ((1, (3, [3, 2])), (2, (0, [0, 0]))):
        pool = BlockPool(mixed_spec(window=6), 20)
        write_context(pool, "a", tokens, first_index={1: first_index})
        match = pool.lookup_prefix(tokens)
        assert (match.num_blocks, [len(ids) for ids in match.layer_block_ids]) == expected
        assert match.num_global_blocks == 3


def test_reclaim_takes_empty_blocks_first_then_least_recently_freed() -> None:
    pool = BlockPool(global_spec(1), 6)
    write_context(pool, "old", [1, 2, 3, 4, 5, 6, 7, 8])  # two full blocks
    pool.free_agent_blocks("old")
    write_context(pool, "new", [9, 9, 9, 9])
    pool.free_agent_blocks("new")
    assert pool.num_cached_blocks() == 3
    pool.allocate(3, 0, "x")  # three empty blocks are left: no cached block is touched
    assert pool.num_cached_blocks() == 3
    pool.allocate(1, 0, "x")  # the oldest prefix's *last* block goes first
    assert pool.lookup_prefix([1, 2, 3, 4, 5, 6, 7, 8]).num_blocks == 1
    assert pool.lookup_prefix([9, 9, 9, 9]).num_blocks == 1
    pool.allocate(1, 0, "x")
    assert pool.lookup_prefix([1, 2, 3, 4]).num_blocks == 0
    assert pool.lookup_prefix([9, 9, 9, 9]).num_blocks == 1
    pool.check_invariants()


def test_reclaim_cached_blocks_forgets_hashes() -> None:
    pool = BlockPool(global_spec(1), 6)
    write_context(pool, "a", PROMPT)
    pool.free_agent_blocks("a")
    assert pool.reclaim_cached_blocks(1) == 1
    assert pool.num_cached_blocks() == 1
    assert pool.reclaim_cached_blocks() == 1
    assert (pool.num_cached_blocks(), pool.lookup_prefix(PROMPT).num_blocks) == (0, 0)
    pool.check_invariants()


def test_stale_match_is_refused() -> None:
    pool = BlockPool(global_spec(1), 3)
    write_context(pool, "a", PROMPT)
    pool.free_agent_blocks("a")
    match = pool.lookup_prefix(PROMPT)
    pool.allocate(3, 0, "x")  # reclaims the cached blocks
    with pytest.raises(ValueError, match="prefix match is stale"):
        pool.acquire_prefix("b", match)
    assert pool.agent_block_count("b") == 0
    pool.check_invariants()
