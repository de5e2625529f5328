"""Rolling a context back (``BlockPoolBatchEngine.truncate``): the next turn matches mlx-lm on the
rolled-back context, reads nothing again that was still in blocks, and the pool gives back the turn."""

from __future__ import annotations

import pytest

from engine import BlockPoolBatchEngine
from pool import BlockPool, ModelCacheSpec

from .reference import assert_blocks_accounted, reference_turns, run_alone

MAX_TOKENS = 12
FOLLOW_UP = "\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def first_turn(tokenizer) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three colours of the rainbow, then three fruits, in one line each."}],
        add_generation_prompt=True, tokenize=False)


def two_turns(default_model, engine, question: str) -> tuple[int, str, str]:
    """Agent "a" answers a first turn and one more; returns the tokens to keep (the first turn's
    context), the turn to ask instead of the second, and mlx-lm's reply to it on that context."""
    model, tokenizer = default_model
    first, retry = first_turn(tokenizer), FOLLOW_UP.format(question)
    _, want = reference_turns(model, tokenizer, [first, retry], MAX_TOKENS)
    done = run_alone(engine, "a", first, MAX_TOKENS)
    run_alone(engine, "a", FOLLOW_UP.format("Say hello."), MAX_TOKENS, done.blocks)
    return done.blocks.total_tokens, retry, want


@pytest.fixture
def engine(default_model):
    """Blocks of 16 tokens: a turn crosses several, and a rollback cuts one."""
    model, tokenizer = default_model
    spec = ModelCacheSpec.from_model(model, block_tokens=16)
    return BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, total_blocks=600), spec)


def test_regenerated_turn_matches_mlx_lm_on_the_rolled_back_context(default_model, engine):
    model, tokenizer = default_model
    first, retry = first_turn(tokenizer), FOLLOW_UP.format("Which of the fruits is yellow?")
    _, want = reference_turns(model, tokenizer, [first, retry], MAX_TOKENS)
    done = run_alone(engine, "a", first, MAX_TOKENS)
    kept, used_before = done.blocks.total_tokens, engine.pool.used_blocks()
    dropped = run_alone(engine, "a", FOLLOW_UP.format("Now count to twenty, slowly, in words."), 40, done.blocks)
    assert engine.pool.used_blocks() > used_before  # the dropped turn took blocks

    blocks = engine.truncate("a", kept)
    assert blocks is dropped.blocks and blocks.total_tokens == kept
    assert engine.pool.used_blocks() == used_before
    assert_blocks_accounted(engine, ["a"])
    again = run_alone(engine, "a", retry, MAX_TOKENS, blocks)
    assert again.text == want
    assert again.cached_tokens == kept  # nothing still in blocks was read again


def test_a_fork_rolled_back_copies_its_shared_block_and_leaves_the_source(default_model, engine):
    kept, retry, want = two_turns(default_model, engine, "And which is red?")
    source_ids = list(engine.agent_blocks("a").token_ids)
    forked = engine.fork("a", "b")
    blocks = engine.truncate("b", kept)
    assert engine.agent_blocks("a").token_ids == source_ids
    assert run_alone(engine, "b", retry, MAX_TOKENS, blocks).text == want
    assert_blocks_accounted(engine, ["a", "b"])
    assert forked is blocks


def test_truncate_refuses_a_running_agent_and_a_length_past_the_context(default_model, engine):
    _, tokenizer = default_model
    done = run_alone(engine, "a", first_turn(tokenizer), 2)
    total = done.blocks.total_tokens
    with pytest.raises(ValueError, match=rf"cannot truncate agent 'a' to {total + 1} tokens: its context holds {total}"):
        engine.truncate("a", total + 1)
    engine.submit("a", FOLLOW_UP.format("Hi."), done.blocks, max_tokens=4)
    with pytest.raises(ValueError, match="agent 'a' is running"):
        engine.truncate("a", 1)
    with pytest.raises(ValueError, match="agent 'nobody' has no context"):
        engine.truncate("nobody", 0)
    list(engine.step())


def test_a_spilled_context_is_restored_from_disk_then_rolled_back(default_model, engine):
    kept, retry, want = two_turns(default_model, engine, "Which colour comes first?")
    assert engine.evict("a") and "a" in engine.spilled_agents()
    blocks = engine.truncate("a", kept)
    assert "a" not in engine.spilled_agents() and blocks.total_tokens == kept  # back from its file, then cut
    again = run_alone(engine, "a", retry, MAX_TOKENS, blocks)
    assert again.text == want and again.cached_tokens == kept
    assert_blocks_accounted(engine, ["a"])
