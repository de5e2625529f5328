"""Soak: random submit / continue / step / cancel / close / evict sequences on a small pool.

A hypothesis state machine over the real engine and model (short generations); after
every operation no block leaks and the pool's invariants hold.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine import BlockPoolBatchEngine
from pool import BlockPool

AGENTS = [f"agent{i}" for i in range(5)]
TOKENS = st.lists(st.integers(min_value=200, max_value=6000), min_size=1, max_size=120)


@pytest.fixture(scope="module")
def soak_setup(default_model, default_spec, tmp_path_factory):
    return default_model, default_spec, tmp_path_factory.mktemp("soak")


def make_machine(default_model, spec, spill_root):
    class EngineSoak(RuleBasedStateMachine):
        """Operations a user (or the UI) can do, in any order."""

        @initialize()
        def start(self) -> None:
            model, tokenizer = default_model
            self.pool = BlockPool(spec, total_blocks=100)  # ~3 short contexts
            self.engine = BlockPoolBatchEngine(model, tokenizer, self.pool, spec, max_batch_size=3,
                                               spill_dir=spill_root / f"run{id(self):x}")
            self.inflight: dict[int, str] = {}
            self.closed: set[str] = set()
            self.operations = 0

        def _idle(self) -> list[str]:
            return [a for a in AGENTS if a not in self.closed and a not in self.inflight.values()]

        @precondition(lambda self: self._idle())
        @rule(data=st.data(), prompt=TOKENS, max_tokens=st.integers(1, 3), fresh=st.booleans())
        def submit(self, data, prompt, max_tokens, fresh) -> None:
            agent = data.draw(st.sampled_from(self._idle()))
            context = None if fresh else self.engine.agent_blocks(agent)
            uid = self.engine.submit(agent, prompt, context, max_tokens=max_tokens)
            self.inflight[uid] = agent

        @precondition(lambda self: self.engine.has_work())
        @rule(steps=st.integers(1, 4))
        def step(self, steps) -> None:
            for _ in range(steps):
                for completion in self.engine.step_once().completions:
                    self.inflight.pop(completion.uid)
                    assert completion.finish_reason in ("stop", "length", "cancelled"), completion.error

        @precondition(lambda self: self.inflight)
        @rule(data=st.data())
        def cancel(self, data) -> None:
            self.engine.cancel(data.draw(st.sampled_from(sorted(self.inflight))))

        @rule(agent=st.sampled_from(AGENTS))
        def close(self, agent) -> None:
            self.engine.close_agent(agent)
            self.closed.add(agent)

        @rule(agent=st.sampled_from(AGENTS))
        def evict(self, agent) -> None:
            evicted = self.engine.evict(agent)
            if evicted:
                assert self.pool.agent_block_count(agent) == 0

        @invariant()
        def no_leaks(self) -> None:
            self.operations += 1
            self.pool.check_invariants()
            held = sum(b.num_blocks() for a in AGENTS if (b := self.engine.agent_blocks(a)) is not None)
            assert self.pool.used_blocks() == held + self.engine.reserved_blocks()
            for agent in self.engine.spilled_agents() | self.closed:
                assert self.pool.agent_block_count(agent) == 0

        def teardown(self) -> None:
            for _ in self.engine.step():
                pass
            assert self.engine.reserved_blocks() == 0
            assert self.pool.used_blocks() == sum(
                b.num_blocks() for a in AGENTS if (b := self.engine.agent_blocks(a)) is not None
            )

    return EngineSoak


def test_engine_soak(soak_setup):
    from hypothesis.stateful import run_state_machine_as_test

    machine = make_machine(*soak_setup)
    # 6 runs x 100 steps: 600 operations, each followed by the invariant checks.
    run_state_machine_as_test(machine, settings=settings(
        max_examples=6, stateful_step_count=100, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))
