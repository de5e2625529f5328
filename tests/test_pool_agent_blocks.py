"""Block and AgentBlocks: token ranges, contiguity and the seed's usage."""

from __future__ import annotations

import pytest

from pool import AgentBlocks, Block, BlockPool, ModelCacheSpec


def small_spec(n_layers: int = 4) -> ModelCacheSpec:
    return ModelCacheSpec(
        n_layers=n_layers, n_kv_heads=2, head_dim=8, dtype="float16", block_tokens=4,
        layer_types=("global",) * n_layers,
    )


@pytest.fixture
def pool() -> BlockPool:
    return BlockPool(small_spec(), total_blocks=10)


def gemma_like_spec() -> ModelCacheSpec:
    """48 layers, every sixth global, window 1024 (the project's seed)."""
    return ModelCacheSpec(
        n_layers=48, n_kv_heads=8, head_dim=128, dtype="bfloat16",
        layer_types=tuple("global" if i % 6 == 5 else "sliding" for i in range(48)),
        sliding_window=1024,
    )


# -- Block ---------------------------------------------------------------------


def test_block_token_range_and_reset() -> None:
    block = Block(block_id=5, layer_id=2, agent_id="a", capacity=4)
    assert block.token_end is None and not block.is_full
    block.token_start, block.num_tokens = 8, 4
    assert block.token_end == 12 and block.is_full
    block.layer_data["k"] = 1
    block.reset()
    assert (block.layer_id, block.agent_id, block.token_start, block.num_tokens) == (
        None, None, None, 0)
    assert block.layer_data == {} and block.block_id == 5 and block.capacity == 4


def test_blocks_compare_by_identity() -> None:
    assert Block(1, 0, "a", 4) != Block(1, 0, "a", 4)


# -- AgentBlocks ---------------------------------------------------------------


def test_seed_snippet_runs_as_written() -> None:
    spec = gemma_like_spec()
    pool = BlockPool(spec, total_blocks=1000)
    used_before = pool.used_blocks()
    agent_blocks = AgentBlocks(agent_id="test_agent", total_tokens=8192)
    for layer_id in range(spec.n_layers):
        n_blocks = 32 if spec.layer_types[layer_id] == "global" else 4
        blocks = pool.allocate(n_blocks, layer_id, "test_agent")
        for block in blocks:
            agent_blocks.add_block(block)
    assert pool.used_blocks() == 8 * 32 + 40 * 4
    assert agent_blocks.num_blocks() == pool.agent_block_count("test_agent")
    assert [b.token_start for b in agent_blocks.layer_blocks(5)][:3] == [0, 256, 512]
    assert agent_blocks.num_layer_blocks(0) == 4 == spec.max_blocks_for_layer(0, 8192)
    assert agent_blocks.num_layer_blocks(5) == 32 == spec.max_blocks_for_layer(5, 8192)
    pool.check_invariants()
    assert pool.free_agent_blocks("test_agent") == 416
    assert pool.used_blocks() == used_before


def filled_agent(pool: BlockPool, total_tokens: int) -> AgentBlocks:
    """An agent whose every layer holds exactly `total_tokens` tokens."""
    agent = AgentBlocks("a", total_tokens=total_tokens)
    block_tokens = pool.spec.block_tokens
    for layer_id in range(pool.spec.n_layers):
        n_blocks = pool.spec.max_blocks_for_layer(layer_id, total_tokens)
        for block in pool.allocate(n_blocks, layer_id, "a"):
            agent.add_block(block)
            block.num_tokens = min(block_tokens, total_tokens - block.token_start)
    return agent


def test_filled_agent_passes_check() -> None:
    pool = BlockPool(small_spec(2), 20)
    agent = filled_agent(pool, total_tokens=10)
    agent.check(pool.spec)
    assert agent.layer_tokens(0) == 10
    assert [b.num_tokens for b in agent.layer_blocks(1)] == [4, 4, 2]
    assert len(agent.all_blocks()) == 6


def test_add_block_rejects_other_owner_and_free_blocks(pool: BlockPool) -> None:
    agent = AgentBlocks("a")
    other = pool.allocate(1, 0, "b")[0]
    with pytest.raises(ValueError, match=f"block {other.block_id} belongs to 'b', not 'a'"):
        agent.add_block(other)
    free_block = Block(3, None, "a", 4)
    with pytest.raises(ValueError, match="block 3 has no layer"):
        agent.add_block(free_block)


def test_add_block_checks_contiguity(pool: BlockPool) -> None:
    agent = AgentBlocks("a")
    first, second, third = pool.allocate(3, 0, "a")
    first.token_start = 8  # an empty layer may begin anywhere
    agent.add_block(first)
    second.token_start = 13
    with pytest.raises(ValueError, match=f"block {second.block_id} starts at token 13, "
                       "layer 0 continues at token 12"):
        agent.add_block(second)
    third.token_start = 12
    agent.add_block(third)
    assert agent.layer_blocks(0) == [first, third]


def test_agent_blocks_arguments_validated() -> None:
    with pytest.raises(ValueError, match="agent_id must be a non-empty string"):
        AgentBlocks("")
    with pytest.raises(ValueError, match="total_tokens must be >= 0, got -1"):
        AgentBlocks("a", total_tokens=-1)


def test_remove_blocks_and_clear(pool: BlockPool) -> None:
    agent = AgentBlocks("a")
    blocks = pool.allocate(3, 0, "a") + pool.allocate(2, 1, "a")
    for block in blocks:
        agent.add_block(block)
    agent.remove_blocks(0, blocks[:1])
    assert agent.layer_blocks(0) == blocks[1:3]
    with pytest.raises(ValueError, match="1 of the blocks are not held by 'a' in layer 1"):
        agent.remove_blocks(1, [blocks[0]])
    agent.remove_blocks(1, blocks[3:])
    assert agent.layer_blocks(1) == [] and agent.num_layer_blocks(1) == 0
    assert pool.free(blocks[:1] + blocks[3:]) == 3
    detached = agent.clear()
    assert detached == blocks[1:3] and agent.num_blocks() == 0
    assert pool.free(detached) == 2 and pool.used_blocks() == 0


def test_layer_blocks_is_a_copy(pool: BlockPool) -> None:
    agent = AgentBlocks("a")
    agent.add_block(pool.allocate(1, 0, "a")[0])
    agent.layer_blocks(0).clear()
    assert agent.num_layer_blocks(0) == 1


def test_check_catches_gaps_overfill_and_coverage() -> None:
    pool = BlockPool(small_spec(1), 10)
    agent = filled_agent(pool, total_tokens=10)
    blocks = agent.layer_blocks(0)
    blocks[0].num_tokens = 3  # partly filled but not last
    with pytest.raises(AssertionError, match="partly filled"):
        agent.check(pool.spec)
    blocks[0].num_tokens = 4
    blocks[2].num_tokens = 5
    with pytest.raises(AssertionError, match="holds 5 tokens, capacity 4"):
        agent.check(pool.spec)
    blocks[2].num_tokens = 1
    with pytest.raises(AssertionError, match="global layer 0 covers tokens 0..9, context has 10"):
        agent.check(pool.spec)
    blocks[2].num_tokens, blocks[2].token_start = 2, 9
    with pytest.raises(AssertionError, match="starts at 9, previous block ends at 8"):
        agent.check(pool.spec)


def test_check_caps_sliding_layers() -> None:
    spec = ModelCacheSpec(
        n_layers=2, n_kv_heads=1, head_dim=4, dtype="float32", block_tokens=4,
        layer_types=("sliding", "global"), sliding_window=6,
    )
    pool = BlockPool(spec, 20)
    agent = filled_agent(pool, total_tokens=6)
    agent.check(spec)
    agent.layer_blocks(0)[-1].num_tokens = 4
    extra = pool.allocate(1, 0, "a")[0]
    agent.add_block(extra)
    with pytest.raises(AssertionError, match="sliding layer 0 holds 3 blocks, at most 2"):
        agent.check(spec)
