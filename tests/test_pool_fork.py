"""Forks and copy-on-write over shared blocks, and the observer of shares: bookkeeping without a model."""

from __future__ import annotations

import threading

import pytest

from pool import BlockPool, PoolExhausted
from tests.pool_builders import PROMPT, global_spec, write_context

# -- fork and copy-on-write ---------------------------------------------------------


def test_fork_shares_every_block_and_copies_nothing() -> None:
    pool = BlockPool(global_spec(), 10)
    source = write_context(pool, "a", PROMPT)
    used = pool.used_blocks()
    forked = pool.fork(source, "b")
    assert pool.used_blocks() == used
    assert (forked.agent_id, forked.total_tokens, forked.token_ids) == ("b", 10, PROMPT)
    assert [b.block_id for b in forked.all_blocks()] == [b.block_id for b in source.all_blocks()]
    assert all(b.holder_ids == ("a", "b") for b in source.all_blocks())
    forked.check(pool.spec)
    pool.check_invariants()


def test_fork_refuses_bad_targets() -> None:
    pool = BlockPool(global_spec(), 10)
    source = write_context(pool, "a", PROMPT)
    pool.allocate(1, 0, "busy")
    with pytest.raises(ValueError, match="agent 'busy' already holds 1 blocks"):
        pool.fork(source, "busy")
    with pytest.raises(ValueError, match="cannot fork agent 'a' into itself"):
        pool.fork(source, "a")
    pool.free_agent_blocks("a")
    with pytest.raises(ValueError, match="agent 'a' no longer holds blocks"):
        pool.fork(source, "b")
    assert pool.agent_block_count("b") == 0


def test_copy_on_write_swaps_the_shared_partial_block() -> None:
    pool = BlockPool(global_spec(), 10)
    source = write_context(pool, "a", PROMPT)
    forked = pool.fork(source, "b")
    old_tails = [forked.layer_blocks(layer_id)[-1] for layer_id in (0, 1)]
    assert not any(pool.is_writable(b, "b") for b in old_tails)
    pairs = pool.copy_on_write(forked)
    new_tails = [forked.layer_blocks(layer_id)[-1] for layer_id in (0, 1)]
    assert pairs == [(o.block_id, n.block_id) for o, n in zip(old_tails, new_tails)]
    for old, new in zip(old_tails, new_tails):
        assert (new.token_start, new.num_tokens, new.layer_id) == (old.token_start, old.num_tokens, old.layer_id)
        assert pool.is_writable(new, "b") and old.holder_ids == ("a",) and pool.is_writable(old, "a")
    assert pool.used_blocks() == 6 + 2
    assert pool.copy_on_write(forked) == []  # now private: nothing to copy
    forked.check(pool.spec)
    pool.check_invariants()


def test_copy_on_write_is_all_or_nothing() -> None:
    pool = BlockPool(global_spec(), 7)
    forked = pool.fork(write_context(pool, "a", PROMPT), "b")
    pool.allocate(1, 0, "x")  # leaves 0 free; the fork needs 2 copies
    before = pool.snapshot()
    with pytest.raises(PoolExhausted) as caught:
        pool.copy_on_write(forked)
    assert (caught.value.requested, caught.value.free, caught.value.total) == (2, 0, 7)
    assert pool.snapshot() == before


def test_copy_on_write_of_a_private_hashed_block_drops_its_hash() -> None:
    pool = BlockPool(global_spec(1), 6)
    agent = write_context(pool, "a", PROMPT)
    first = agent.layer_blocks(0)[0]
    assert not pool.is_writable(first, "a")  # named by a hash: others may look it up
    assert pool.copy_on_write(agent, [first]) == []
    assert first.block_hash is None and pool.is_writable(first, "a")
    assert pool.lookup_prefix(PROMPT).num_blocks == 0
    pool.hold([agent.layer_blocks(0)[1]], "b")
    with pytest.raises(ValueError, match="has 2 holders; only a private block's hash"):
        pool.forget_hash(agent.layer_blocks(0)[1])
    pool.check_invariants()


def test_copy_on_write_refuses_blocks_outside_the_context() -> None:
    pool = BlockPool(global_spec(1), 6)
    agent = write_context(pool, "a", PROMPT)
    stranger = pool.allocate(1, 0, "z")[0]
    with pytest.raises(ValueError, match=f"block {stranger.block_id} is not in agent 'a'"):
        pool.copy_on_write(agent, [stranger])
    tail = agent.layer_blocks(0)[-1]
    with pytest.raises(ValueError, match="listed twice"):
        pool.copy_on_write(agent, [tail, tail])


# -- observer ---------------------------------------------------------------------


def test_observer_sees_shares_after_the_lock_is_released() -> None:
    events: list[tuple[str, str, int, list[int]]] = []
    seen_from_other_thread: list[int] = []

    def observer(*event: object) -> None:
        events.append(event)  # type: ignore[arg-type]
        reader = threading.Thread(target=lambda: seen_from_other_thread.append(pool.used_blocks()))
        reader.start()
        reader.join(timeout=2)

    pool = BlockPool(global_spec(1), 6, on_change=observer)
    source = write_context(pool, "a", [1, 2, 3, 4])
    events.clear()
    pool.fork(source, "b")
    block_id = source.layer_blocks(0)[0].block_id
    assert events == [("share", "b", 0, [block_id])]
    assert seen_from_other_thread[-1] == 1
