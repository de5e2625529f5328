"""Shared blocks under random sequences of prompts, turns, forks, closes, lookups and reclaims.

The machine plays the engine on block-aligned storage (sliding layers keep the
blocks their window touches) and keeps, for every block it wrote, the tokens
the block's K/V stands for: [0, token_end) of the context that wrote it.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, multiple, rule

from pool import AgentBlocks, Block, BlockPool, ModelCacheSpec, PoolExhausted

BT = 4
WINDOW = 6  # not a multiple of BT: a window's first block is partly outside it
TOTAL_BLOCKS = 30
SPEC = ModelCacheSpec(
    n_layers=3, n_kv_heads=1, head_dim=2, dtype="float16", block_tokens=BT,
    layer_types=("global", "sliding", "global"), sliding_window=WINDOW,
)
SYSTEM_PROMPTS = (
    (7, 7, 1, 2, 3, 4, 5, 6, 8, 9, 1, 1, 2, 2, 3, 3), (3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3),
)

prompts = st.builds(
    lambda system, cut, tail: list(SYSTEM_PROMPTS[system][:cut]) + tail,
    st.integers(0, 1), st.integers(0, 16), st.lists(st.integers(0, 3), min_size=2, max_size=8),
)
turns = st.lists(st.integers(0, 3), min_size=1, max_size=7)


def window_first_index(layer_id: int, num_tokens: int) -> int:
    """Index of the first block a layer keeps for a context of `num_tokens`."""
    return (num_tokens - SPEC.tokens_kept(layer_id, num_tokens)) // BT


class SharingMachine(RuleBasedStateMachine):
    agent_names = Bundle("agent_names")

    def __init__(self) -> None:
        super().__init__()
        self.pool = BlockPool(SPEC, TOTAL_BLOCKS, model_key="test-model")
        self.agents: dict[str, AgentBlocks] = {}
        self.prefix_of: dict[int, tuple[int, ...]] = {}  # block id -> tokens its K/V stands for
        self.next_id = 0

    # -- the engine's part ----------------------------------------------------

    def grow(self, agent: AgentBlocks, new_tokens: list[int]) -> bool:
        """Write `new_tokens` into the agent's blocks; False (nothing changed) if the pool is full."""
        tokens = agent.token_ids + new_tokens
        n1 = len(tokens)
        plans, needed = {}, 0
        for layer_id in range(SPEC.n_layers):
            blocks = agent.layer_blocks(layer_id)
            last = blocks[-1] if blocks and not blocks[-1].is_full else None
            next_index = blocks[-1].token_start // BT + 1 if blocks else 0
            plans[layer_id] = (last, next_index)
            needed += (-(-n1 // BT) - next_index) + (last is not None and last.is_shared)
        if not self.pool.can_allocate(needed):
            return False
        for layer_id, (last, next_index) in plans.items():
            if last is not None:
                for old_id, new_id in self.pool.copy_on_write(agent, [last]):
                    self.prefix_of[new_id] = self.prefix_of[old_id]
                self.write(agent, agent.layer_blocks(layer_id)[-1], tokens)
            for index in range(next_index, -(-n1 // BT)):
                block = self.pool.allocate(1, layer_id, agent.agent_id)[0]
                block.token_start = index * BT
                agent.add_block(block)
                self.write(agent, block, tokens)
        agent.total_tokens, agent.token_ids = n1, tokens
        self.pool.register_full_blocks(agent)
        for layer_id in SPEC.sliding_layer_ids:  # blocks that left the window: cached if hashed
            first = window_first_index(layer_id, n1)
            drop = [b for b in agent.layer_blocks(layer_id) if b.token_start // BT < first]
            self.pool.free(drop, agent.agent_id)
            agent.remove_blocks(layer_id, drop)
        return True

    def write(self, agent: AgentBlocks, block: Block, tokens: list[int]) -> None:
        assert self.pool.is_writable(block, agent.agent_id), f"{block} handed out as writable"
        block.num_tokens = min(BT, len(tokens) - block.token_start)
        self.prefix_of[block.block_id] = tuple(tokens[: block.token_end])

    def new_name(self) -> str:
        self.next_id += 1
        return f"agent-{self.next_id}"

    # -- rules -----------------------------------------------------------------

    @rule(target=agent_names, prompt=prompts, use_prefix=st.booleans())
    def new_agent(self, prompt: list[int], use_prefix: bool) -> str:
        agent_id = self.new_name()
        agent = AgentBlocks(agent_id)
        if use_prefix:
            match = self.pool.lookup_prefix(prompt[:-1])
            self.check_match(prompt[:-1], match)
            agent = self.pool.acquire_prefix(agent_id, match)
            assert agent.token_ids == prompt[: match.num_tokens]
        if not self.grow(agent, prompt[agent.total_tokens :]):
            self.pool.free_agent_blocks(agent_id)
            return multiple()  # type: ignore[return-value]
        self.agents[agent_id] = agent
        return agent_id

    @rule(agent_id=agent_names, new_tokens=turns)
    def next_turn(self, agent_id: str, new_tokens: list[int]) -> None:
        if agent_id in self.agents:
            self.grow(self.agents[agent_id], new_tokens)

    @rule(target=agent_names, source_id=agent_names)
    def fork(self, source_id: str) -> str:
        if source_id not in self.agents:
            return multiple()  # type: ignore[return-value]
        used_before = self.pool.used_blocks()
        forked = self.pool.fork(self.agents[source_id], self.new_name())
        assert self.pool.used_blocks() == used_before, "a fork took new blocks"
        self.agents[forked.agent_id] = forked
        return forked.agent_id

    @rule(agent_id=consumes(agent_names))
    def close(self, agent_id: str) -> None:
        agent = self.agents.pop(agent_id, None)
        if agent is not None:
            assert self.pool.free_agent_blocks(agent_id) == agent.num_blocks()

    @rule(agent_id=agent_names)
    def copy_on_write(self, agent_id: str) -> None:
        agent = self.agents.get(agent_id)
        if agent is None:
            return
        partial = [layer[-1] for layer in agent.blocks.values() if not layer[-1].is_full]
        num_shared = sum(b.is_shared for b in partial)
        free = self.pool.free_blocks()
        if num_shared > free:
            before = self.pool.snapshot()
            with pytest.raises(PoolExhausted) as caught:
                self.pool.copy_on_write(agent)
            assert (caught.value.requested, caught.value.free) == (num_shared, free)
            assert self.pool.snapshot() == before
            return
        pairs = self.pool.copy_on_write(agent)
        assert len(pairs) == num_shared
        for old_id, new_id in pairs:
            self.prefix_of[new_id] = self.prefix_of[old_id]
            assert self.pool.holders_of(new_id) == (agent_id,)
            assert agent_id not in self.pool.holders_of(old_id)

    @rule(prompt=prompts)
    def lookup(self, prompt: list[int]) -> None:
        self.check_match(prompt, self.pool.lookup_prefix(prompt))

    @rule(n_blocks=st.integers(1, TOTAL_BLOCKS))
    def pressure(self, n_blocks: int) -> None:
        """Someone else takes blocks for a moment: cached blocks are reclaimed first."""
        if not self.pool.can_allocate(n_blocks):
            return
        num_empty = self.pool.free_blocks() - self.pool.num_cached_blocks()
        cached_before = self.pool.num_cached_blocks()
        self.pool.free(self.pool.allocate(n_blocks, 0, "scratch"))
        assert self.pool.num_cached_blocks() == cached_before - max(0, n_blocks - num_empty)

    @rule(n_blocks=st.none() | st.integers(0, TOTAL_BLOCKS))
    def reclaim(self, n_blocks: int | None) -> None:
        cached = self.pool.num_cached_blocks()
        expected = cached if n_blocks is None else min(n_blocks, cached)
        assert self.pool.reclaim_cached_blocks(n_blocks) == expected
        assert self.pool.num_cached_blocks() == cached - expected

    # -- checks ------------------------------------------------------------------

    def check_match(self, query: list[int], match) -> None:
        """The hit's blocks stand for the query's tokens, and no longer hit exists."""
        assert match.num_tokens == match.num_blocks * BT
        assert list(match.token_ids) == query[: match.num_tokens]
        for layer_id, block_ids in enumerate(match.layer_block_ids):
            expected = range(window_first_index(layer_id, match.num_tokens) if match.num_blocks else 0,
                             match.num_blocks)
            assert len(block_ids) == len(expected)
            for index, block_id in zip(expected, block_ids):
                block = self.pool.block(block_id)
                assert (block.layer_id, block.token_start) == (layer_id, index * BT)
                assert self.prefix_of[block_id] == tuple(query[: (index + 1) * BT])
        assert match.num_blocks == self.longest_possible_hit(query)

    def longest_possible_hit(self, query: list[int]) -> int:
        """The oracle: from the machine's own record of what each hashed block holds."""
        present = {
            (b.layer_id, self.prefix_of[b.block_id])
            for b in (self.pool.block(i) for i in range(TOTAL_BLOCKS)) if b.block_hash is not None
        }
        def serves(layer_id: int, cut: int) -> bool:
            first = window_first_index(layer_id, cut * BT)
            return all((layer_id, tuple(query[: (i + 1) * BT])) in present for i in range(first, cut))
        for cut in range(len(query) // BT, 0, -1):
            if all(serves(layer_id, cut) for layer_id in range(SPEC.n_layers)):
                return cut
        return 0

    @invariant()
    def counts_add_up(self) -> None:
        self.pool.check_invariants()
        assert self.pool.used_blocks() + self.pool.free_blocks() == TOTAL_BLOCKS
        blocks = [self.pool.block(i) for i in range(TOTAL_BLOCKS)]
        assert self.pool.num_cached_blocks() == sum(b.is_cached for b in blocks)
        assert self.pool.num_cached_blocks("global") + self.pool.num_cached_blocks("sliding") == (
            self.pool.num_cached_blocks())

    @invariant()
    def ref_counts_equal_holders(self) -> None:
        holders: dict[int, set[str]] = {}
        for agent in self.agents.values():
            ids = [b.block_id for b in agent.all_blocks()]
            assert len(ids) == len(set(ids)), f"{agent.agent_id} lists a block twice"
            for block_id in ids:
                holders.setdefault(block_id, set()).add(agent.agent_id)
        for block_id in range(TOTAL_BLOCKS):
            block = self.pool.block(block_id)
            assert set(block.holder_ids) == holders.get(block_id, set())
            assert block.ref_count == len(holders.get(block_id, ()))
            assert block.is_free == (block_id not in holders), "free iff no one holds it"
        assert self.pool.used_blocks() == len(holders)

    @invariant()
    def hashes_match_tokens(self) -> None:
        for block_id in range(TOTAL_BLOCKS):
            block = self.pool.block(block_id)
            if block.block_hash is not None:
                tokens = self.prefix_of[block_id]
                assert len(tokens) == block.token_end
                assert block.block_hash == self.pool.hasher.block_hashes(tokens)[-1]

    @invariant()
    def every_holder_sees_its_own_tokens(self) -> None:
        """A shared block is never written: each holder's tokens still match its blocks."""
        for agent in self.agents.values():
            for layer_id, layer in agent.blocks.items():
                assert layer[-1].token_end == agent.total_tokens
                for block in layer:
                    assert self.prefix_of[block.block_id] == tuple(agent.token_ids[: block.token_end])
                if not SPEC.is_sliding(layer_id):
                    assert layer[0].token_start == 0 and agent.layer_tokens(layer_id) == agent.total_tokens


SharingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
TestSharingMachine = SharingMachine.TestCase
