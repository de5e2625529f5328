"""EXP-005 as the seed defines it: the engine's text is byte-identical to mlx_lm.generate."""

from __future__ import annotations

import pytest

from engine import BlockPoolBatchEngine
from pool import BlockPool, ModelCacheSpec

from .reference import reference

SEED_PROMPTS = [
    ("short", "The quick brown fox"),
    ("medium", "Write a story about a robot"),
    ("long", "Explain quantum computing in detail"),
]


@pytest.fixture(scope="module")
def seed_engine(default_model):
    model, tokenizer = default_model
    spec = ModelCacheSpec.from_model(model)
    pool = BlockPool(spec, total_blocks=100)
    return BlockPoolBatchEngine(model, tokenizer, pool, spec)


def generate_test(engine: BlockPoolBatchEngine, prompt: str, max_tokens: int = 100):
    """The seed's generate_test, returning the whole completion."""
    uid = engine.submit(agent_id="test_agent", prompt=prompt, cache=None, max_tokens=max_tokens)
    for completion in engine.step():
        if completion.uid == uid:
            return completion
    raise RuntimeError(f"Generation {uid} did not complete")


@pytest.mark.parametrize("label,prompt", SEED_PROMPTS, ids=[p[0] for p in SEED_PROMPTS])
def test_exp005_byte_identical(default_model, seed_engine, label, prompt):
    model, tokenizer = default_model
    expected = reference(model, tokenizer, prompt, max_tokens=100)
    completion = generate_test(seed_engine, prompt, max_tokens=100)

    assert completion.text == expected
    assert completion.finish_reason in ("stop", "length"), completion.error
    prompt_tokens = len(tokenizer.encode(prompt))
    generated = completion.token_count - prompt_tokens
    assert 1 <= generated <= 100
    assert completion.blocks.total_tokens == completion.token_count


def test_exp005_no_leaks_over_ten_runs(seed_engine):
    pool = seed_engine.pool
    pool.free_agent_blocks("test_agent")
    initial_used = pool.used_blocks()
    for _ in range(10):
        completion = generate_test(seed_engine, "The quick brown fox", max_tokens=4)
        assert completion.finish_reason in ("stop", "length")
        assert pool.used_blocks() > initial_used
        pool.free_agent_blocks("test_agent")
    assert pool.used_blocks() == initial_used
    pool.check_invariants()
