"""BlockPool and PoolSnapshot: bookkeeping without a model."""

from __future__ import annotations

import dataclasses

import pytest

from pool import Block, BlockPool, PoolExhausted, PoolSnapshot
from tests.pool_builders import small_spec


@pytest.fixture
def pool() -> BlockPool:
    return BlockPool(small_spec(), total_blocks=10)


# -- construction --------------------------------------------------------------


def test_new_pool_is_empty(pool: BlockPool) -> None:
    assert (pool.total_blocks, pool.free_blocks(), pool.used_blocks()) == (10, 10, 0)
    assert pool.used_bytes() == 0
    assert pool.total_bytes() == 10 * pool.spec.bytes_per_block
    assert pool.layer_usage() == [0, 0, 0, 0]
    assert pool.agent_ids() == []
    assert pool.agent_usage() == {}
    pool.check_invariants()


def test_total_blocks_must_be_positive() -> None:
    with pytest.raises(ValueError, match="total_blocks must be >= 1, got 0"):
        BlockPool(small_spec(), total_blocks=0)


def test_from_memory_budget() -> None:
    spec = small_spec()  # 2 * 2 * 8 * 4 * 2 = 256 bytes per block
    assert spec.bytes_per_block == 256
    assert BlockPool.from_memory_budget(spec, 256 * 7 + 255).total_blocks == 7
    with pytest.raises(ValueError, match="budget of 255 bytes holds no block; one block needs 256"):
        BlockPool.from_memory_budget(spec, 255)


# -- allocate ------------------------------------------------------------------


def test_allocate_gives_owned_empty_blocks(pool: BlockPool) -> None:
    blocks = pool.allocate(3, layer_id=2, agent_id="a")
    assert len({b.block_id for b in blocks}) == 3
    for block in blocks:
        assert (block.agent_id, block.layer_id) == ("a", 2)
        assert (block.token_start, block.num_tokens, block.capacity) == (None, 0, 4)
        assert pool.owner_of(block.block_id) == "a"
    assert (pool.used_blocks(), pool.free_blocks()) == (3, 7)
    assert pool.used_bytes() == 3 * pool.spec.bytes_per_block
    assert pool.layer_usage() == [0, 0, 3, 0]
    assert pool.agent_block_count("a") == 3
    assert pool.agent_block_count("nobody") == 0
    pool.check_invariants()


def test_can_allocate(pool: BlockPool) -> None:
    assert pool.can_allocate(10)
    assert not pool.can_allocate(11)
    pool.allocate(4, 0, "a")
    assert pool.can_allocate(6)
    assert not pool.can_allocate(7)


@pytest.mark.parametrize(
    ("n_blocks", "layer_id", "agent_id", "message"),
    [
        (0, 0, "a", "n_blocks must be >= 1, got 0"),
        (-2, 0, "a", "n_blocks must be >= 1, got -2"),
        (1, 4, "a", r"layer_id 4 outside \[0, 4\)"),
        (1, -1, "a", r"layer_id -1 outside \[0, 4\)"),
        (1, 0, "", "agent_id must be a non-empty string, got ''"),
    ],
)
def test_allocate_rejects_bad_arguments(
    pool: BlockPool, n_blocks: int, layer_id: int, agent_id: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pool.allocate(n_blocks, layer_id, agent_id)
    assert pool.used_blocks() == 0


def test_exhausted_allocation_changes_nothing(pool: BlockPool) -> None:
    pool.allocate(7, 0, "a")
    before = pool.snapshot()
    with pytest.raises(PoolExhausted) as caught:
        pool.allocate(5, 1, "b")
    error = caught.value
    assert isinstance(error, RuntimeError)
    assert (error.requested, error.free, error.total) == (5, 3, 10)
    assert str(error) == (
        "block pool exhausted: requested 5 blocks, 3 free of 10 total; "
        "free an agent's blocks or give the pool more memory"
    )
    assert pool.snapshot() == before
    assert pool.agent_ids() == ["a"]
    pool.check_invariants()


def test_allocate_everything_then_one_more(pool: BlockPool) -> None:
    pool.allocate(10, 3, "a")
    assert pool.free_blocks() == 0
    with pytest.raises(PoolExhausted, match="requested 1 blocks, 0 free of 10 total"):
        pool.allocate(1, 3, "a")


# -- free ----------------------------------------------------------------------


def test_free_returns_blocks_and_resets_them(pool: BlockPool) -> None:
    blocks = pool.allocate(3, 1, "a")
    blocks[0].token_start, blocks[0].num_tokens = 0, 4
    blocks[0].layer_data["k"] = object()
    assert pool.free(blocks[:2]) == 2
    assert (pool.used_blocks(), pool.agent_block_count("a")) == (1, 1)
    assert blocks[0].agent_id is None and blocks[0].layer_id is None
    assert (blocks[0].token_start, blocks[0].num_tokens, blocks[0].layer_data) == (None, 0, {})
    assert pool.owner_of(blocks[0].block_id) is None
    assert pool.free([]) == 0
    pool.check_invariants()


def test_free_already_free_block_changes_nothing(pool: BlockPool) -> None:
    blocks = pool.allocate(3, 0, "a")
    pool.free([blocks[0]])
    with pytest.raises(ValueError, match=f"block {blocks[0].block_id} is already free"):
        pool.free(blocks)  # the other two must stay allocated
    assert pool.agent_block_count("a") == 2
    pool.check_invariants()


def test_free_same_block_twice_in_one_call(pool: BlockPool) -> None:
    blocks = pool.allocate(2, 0, "a")
    with pytest.raises(ValueError, match="passed twice"):
        pool.free([blocks[0], blocks[1], blocks[0]])
    assert pool.agent_block_count("a") == 2


def test_free_foreign_block_changes_nothing(pool: BlockPool) -> None:
    other = BlockPool(small_spec(), total_blocks=10)
    mine = pool.allocate(2, 0, "a")
    foreign = other.allocate(1, 0, "a")[0]
    with pytest.raises(ValueError, match=f"block {foreign.block_id} does not belong to this pool"):
        pool.free([mine[0], foreign])
    out_of_range = Block(99, 0, "a", 4)
    with pytest.raises(ValueError, match="block 99 does not belong to this pool"):
        pool.free([out_of_range])
    assert pool.agent_block_count("a") == 2
    assert other.agent_block_count("a") == 1


def test_free_agent_blocks(pool: BlockPool) -> None:
    pool.allocate(2, 0, "a")
    pool.allocate(3, 1, "a")
    pool.allocate(1, 1, "b")
    assert pool.free_agent_blocks("a") == 5
    assert pool.free_agent_blocks("a") == 0
    assert pool.free_agent_blocks("never-seen") == 0
    assert pool.agent_ids() == ["b"]
    assert pool.agent_usage() == {"b": 1}
    assert pool.layer_usage() == [0, 1, 0, 0]
    pool.check_invariants()


def test_owner_of_rejects_unknown_id(pool: BlockPool) -> None:
    with pytest.raises(ValueError, match=r"block_id 10 outside \[0, 10\)"):
        pool.owner_of(10)


# -- snapshot ------------------------------------------------------------------


def test_snapshot_contents(pool: BlockPool) -> None:
    a_blocks = pool.allocate(2, 0, "a")
    pool.allocate(1, 3, "b")
    a_blocks[0].token_start, a_blocks[0].num_tokens = 0, 3
    snap = pool.snapshot()
    assert isinstance(snap, PoolSnapshot)
    assert (snap.total_blocks, snap.block_tokens, snap.n_layers) == (10, 4, 4)
    assert snap.bytes_per_block == pool.spec.bytes_per_block
    assert snap.layer_types == ("global",) * 4
    assert (snap.used_blocks(), snap.free_blocks()) == (3, 7)
    assert snap.used_bytes() == pool.used_bytes()
    assert snap.agent_usage() == {"a": 2, "b": 1}
    by_layer = snap.by_layer()
    assert [len(by_layer[i]) for i in range(4)] == [2, 0, 0, 1]
    first = next(info for info in snap.blocks if info.block_id == a_blocks[0].block_id)
    assert (first.layer_id, first.agent_id, first.token_start, first.num_tokens) == (0, "a", 0, 3)


def test_snapshot_is_immutable_and_detached(pool: BlockPool) -> None:
    blocks = pool.allocate(2, 0, "a")
    snap = pool.snapshot()
    assert isinstance(snap.blocks, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.total_blocks = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.blocks[0].num_tokens = 3  # type: ignore[misc]
    blocks[0].num_tokens = 4
    pool.free_agent_blocks("a")
    assert snap.used_blocks() == 2
    assert all(info.num_tokens == 0 for info in snap.blocks)
