"""Rolling a context back to its first tokens: bookkeeping without a model."""

from __future__ import annotations

import pytest

from pool import BlockPool, PoolExhausted
from tests.pool_builders import BT, PROMPT, global_spec, mixed_spec, write_context

TURN = list(range(40, 47))  # a later turn: 7 more tokens, past the next block boundary


def grown(pool: BlockPool, agent_id: str = "a"):
    """A context of PROMPT, then PROMPT + TURN written again as the engine's next turn would."""
    write_context(pool, agent_id, PROMPT)
    used_before = pool.used_blocks()
    pool.free_agent_blocks(agent_id)
    return write_context(pool, agent_id, PROMPT + TURN), used_before


def test_truncate_to_an_earlier_turn_gives_its_blocks_back() -> None:
    pool = BlockPool(global_spec(), 20)
    agent, used_before = grown(pool)
    assert pool.truncate(agent, len(PROMPT)) == []  # nothing shared: trimmed in place
    assert (agent.total_tokens, agent.token_ids) == (len(PROMPT), PROMPT)
    assert pool.used_blocks() == used_before
    for layer_id in (0, 1):
        tail = agent.layer_blocks(layer_id)[-1]
        assert (tail.token_start, tail.num_tokens, tail.block_hash) == (8, 2, None)
    agent.check(pool.spec)
    pool.check_invariants()


def test_released_full_blocks_stay_cached() -> None:
    pool = BlockPool(global_spec(), 20)
    agent, _ = grown(pool)
    free_before, cached_before = pool.free_blocks(), pool.num_cached_blocks()
    pool.truncate(agent, BT)  # keeps block 0 of each layer; blocks 1..4 go
    assert pool.free_blocks() == free_before + 2 * 4
    assert pool.num_cached_blocks() == cached_before + 2 * 3  # blocks 1..3 were full and hashed
    pool.check_invariants()


def test_a_shared_partly_kept_block_is_copied_and_the_other_agent_keeps_its_own() -> None:
    pool = BlockPool(global_spec(), 20)
    source, _ = grown(pool)
    forked = pool.fork(source, "b")
    shared_tail = forked.layer_blocks(0)[2]  # tokens 8..11: cut at 10
    pairs = pool.truncate(forked, len(PROMPT))
    assert len(pairs) == 2 and pairs[0][0] == shared_tail.block_id
    new_tail = forked.layer_blocks(0)[-1]
    assert (new_tail.holder_ids, new_tail.token_start, new_tail.num_tokens) == (("b",), 8, 2)
    assert shared_tail.holder_ids == ("a",) and shared_tail.num_tokens == BT  # the source is untouched
    assert source.total_tokens == len(PROMPT + TURN)
    source.check(pool.spec)
    forked.check(pool.spec)
    pool.check_invariants()


def test_truncate_is_all_or_nothing() -> None:
    pool = BlockPool(global_spec(), 10)
    source = write_context(pool, "a", PROMPT + TURN)  # 5 blocks per layer: the pool is full
    forked = pool.fork(source, "b")
    with pytest.raises(PoolExhausted):
        pool.truncate(forked, len(PROMPT))
    with pytest.raises(ValueError, match=r"cannot keep 18 tokens of agent 'b'.*holds 17; pick 0..17"):
        pool.truncate(forked, 18)
    assert forked.total_tokens == 17 and [b.holder_ids for b in forked.all_blocks()] == [("a", "b")] * 10
    pool.check_invariants()


def test_truncate_to_nothing_and_to_everything() -> None:
    pool = BlockPool(global_spec(), 20)
    agent, _ = grown(pool)
    used = pool.used_blocks()
    assert pool.truncate(agent, agent.total_tokens) == [] and pool.used_blocks() == used
    pool.truncate(agent, 0)
    assert (agent.num_blocks(), agent.total_tokens, pool.used_blocks()) == (0, 0, 0)
    pool.check_invariants()


def test_a_sliding_window_that_let_go_of_the_kept_tokens_is_refused() -> None:
    pool = BlockPool(mixed_spec(window=8), 20)
    agent = write_context(pool, "a", PROMPT + TURN, first_index={1: 2})  # sliding layer from token 8
    with pytest.raises(ValueError, match="sliding window no longer holds the tokens before 4"):
        pool.truncate(agent, 4)
    pool.truncate(agent, 16)  # tokens 8..15 are still there
    assert agent.layer_blocks(1)[0].token_start == 8 and agent.total_tokens == 16
    pool.check_invariants()
