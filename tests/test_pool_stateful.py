"""BlockPool under random sequences of allocate / free / free_agent_blocks."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pool import Block, BlockPool, ModelCacheSpec, PoolExhausted

AGENT_IDS = ("a", "b", "c")
N_LAYERS = 3
TOTAL_BLOCKS = 24

SPEC = ModelCacheSpec(
    n_layers=N_LAYERS, n_kv_heads=1, head_dim=4, dtype="float16", block_tokens=8,
    layer_types=("sliding", "global", "sliding"), sliding_window=16,
)


class BlockPoolMachine(RuleBasedStateMachine):
    """Keeps its own model of who holds what and compares it with the pool."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = BlockPool(SPEC, TOTAL_BLOCKS)
        self.held: dict[str, list[Block]] = {agent_id: [] for agent_id in AGENT_IDS}

    @rule(
        agent_id=st.sampled_from(AGENT_IDS),
        layer_id=st.integers(0, N_LAYERS - 1),
        n_blocks=st.integers(1, TOTAL_BLOCKS + 4),
    )
    def allocate(self, agent_id: str, layer_id: int, n_blocks: int) -> None:
        free_before = self.pool.free_blocks()
        if n_blocks > free_before:
            before = self.pool.snapshot()
            with pytest.raises(PoolExhausted) as caught:
                self.pool.allocate(n_blocks, layer_id, agent_id)
            assert (caught.value.requested, caught.value.free) == (n_blocks, free_before)
            assert self.pool.snapshot() == before
            return
        blocks = self.pool.allocate(n_blocks, layer_id, agent_id)
        assert len(blocks) == n_blocks
        assert all((b.agent_id, b.layer_id) == (agent_id, layer_id) for b in blocks)
        self.held[agent_id] += blocks

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data())
    def free_some(self, data: st.DataObject) -> None:
        agent_id = data.draw(st.sampled_from([a for a in AGENT_IDS if self.held[a]]))
        chosen = data.draw(st.sets(st.sampled_from(self.held[agent_id]), min_size=1))
        assert self.pool.free(chosen) == len(chosen)
        self.held[agent_id] = [b for b in self.held[agent_id] if b not in chosen]

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data())
    def free_twice_is_rejected(self, data: st.DataObject) -> None:
        agent_id = data.draw(st.sampled_from([a for a in AGENT_IDS if self.held[a]]))
        block = self.held[agent_id][0]
        before = self.pool.snapshot()
        with pytest.raises(ValueError, match="passed twice"):
            self.pool.free([block, block])
        assert self.pool.snapshot() == before

    @rule(agent_id=st.sampled_from(AGENT_IDS))
    def free_agent_blocks(self, agent_id: str) -> None:
        assert self.pool.free_agent_blocks(agent_id) == len(self.held[agent_id])
        self.held[agent_id] = []

    @invariant()
    def counts_add_up(self) -> None:
        assert self.pool.used_blocks() + self.pool.free_blocks() == TOTAL_BLOCKS
        assert self.pool.used_blocks() == sum(len(blocks) for blocks in self.held.values())
        self.pool.check_invariants()

    @invariant()
    def ownership_matches_model(self) -> None:
        expected = {agent_id: len(blocks) for agent_id, blocks in self.held.items() if blocks}
        assert self.pool.agent_usage() == expected
        assert sorted(self.pool.agent_ids()) == sorted(expected)
        owned_ids = [b.block_id for blocks in self.held.values() for b in blocks]
        assert len(owned_ids) == len(set(owned_ids)), "a block is owned twice"
        for agent_id, blocks in self.held.items():
            assert all(self.pool.owner_of(b.block_id) == agent_id for b in blocks)

    @invariant()
    def layer_usage_matches_model(self) -> None:
        expected = [0] * N_LAYERS
        for blocks in self.held.values():
            for block in blocks:
                expected[block.layer_id] += 1
        assert self.pool.layer_usage() == expected


BlockPoolMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=40, deadline=None
)
TestBlockPoolMachine = BlockPoolMachine.TestCase
