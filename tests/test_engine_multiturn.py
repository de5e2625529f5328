"""A conversation kept in blocks across turns matches mlx-lm with one persistent prompt cache."""

from __future__ import annotations

import pytest

from engine import BlockPoolBatchEngine
from pool import BlockPool

from .reference import assert_blocks_accounted, reference_turns

MAX_TOKENS = 24


def long_document(num_sentences: int) -> str:
    facts = [
        "The lighthouse keeper logged the weather at {n} o'clock.",
        "Ship number {n} reported calm seas and a light northern wind.",
        "On day {n}, the supply boat brought bread, oil and letters.",
        "The lamp was cleaned {n} times before the winter storms began.",
    ]
    return " ".join(facts[i % len(facts)].format(n=i + 1) for i in range(num_sentences))


def chat_turns(tokenizer) -> list[str]:
    first = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Read this log and remember it.\n\n" + long_document(44)}],
        add_generation_prompt=True,
        tokenize=False,
    )
    follow_up = "\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    return [
        first,
        follow_up.format("What did the supply boat bring? Answer in one sentence and then list every item."),
        follow_up.format("Thank you. Now summarise the whole log in two short sentences, please."),
    ]


@pytest.fixture(scope="module")
def conversation(default_model, default_spec):
    model, tokenizer = default_model
    turns = chat_turns(tokenizer)
    return turns, reference_turns(model, tokenizer, turns, MAX_TOKENS)


def test_three_turns_byte_identical_across_block_boundaries(default_model, default_spec, conversation):
    model, tokenizer = default_model
    turns, expected = conversation
    first_prompt_tokens = len(tokenizer.encode(turns[0]))
    assert 550 <= first_prompt_tokens <= 750, first_prompt_tokens  # ~600: several blocks

    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, total_blocks=400), default_spec)
    blocks = None
    block_counts = []
    for turn, want in zip(turns, expected):
        context_before = blocks.total_tokens if blocks is not None else 0
        uid = engine.submit("agent", turn, blocks, max_tokens=MAX_TOKENS)
        (completion,) = list(engine.step())
        assert completion.uid == uid
        assert completion.finish_reason in ("stop", "length"), completion.error
        assert completion.text == want
        # Only the new turn was prefilled: the rest came from blocks.
        assert completion.cached_tokens == context_before
        blocks = completion.blocks
        blocks.check(default_spec)
        assert blocks.total_tokens == len(blocks.token_ids)
        block_counts.append(blocks.num_layer_blocks(0))
        assert_blocks_accounted(engine, ["agent"])
    assert block_counts[-1] > block_counts[0], block_counts  # a later turn crossed a boundary


def test_reconstructed_cache_holds_the_context(default_model, default_spec, conversation):
    """Gathering an agent's blocks gives back exactly the K/V mlx-lm computed."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    model, tokenizer = default_model
    turns, _ = conversation
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, total_blocks=200), default_spec)
    uid = engine.submit("agent", turns[0], None, max_tokens=2)
    (completion,) = list(engine.step())
    agent = completion.blocks

    ref_cache = make_prompt_cache(model)
    model(mx.array(agent.token_ids)[None], cache=ref_cache)
    gathered = engine._reconstruct_cache(agent)
    assert len(gathered) == default_spec.n_layers
    for ours, theirs in zip(gathered, ref_cache):
        assert ours.offset == theirs.offset == agent.total_tokens
        k_ours, v_ours = ours.keys[..., : ours.offset, :], ours.values[..., : ours.offset, :]
        k_ref, v_ref = theirs.keys[..., : theirs.offset, :], theirs.values[..., : theirs.offset, :]
        assert k_ours.shape == k_ref.shape
        assert mx.allclose(k_ours, k_ref, atol=1e-4).item()
        assert mx.allclose(v_ours, v_ref, atol=1e-4).item()


def test_continued_turns_that_end_at_their_first_token_keep_it_in_context(default_model, default_spec):
    """A continued turn is read in one pass with its first token; when that token ends the turn
    (EOS, or max_tokens=1) its K/V still enters the context, as mlx-lm's cache holds it."""
    from mlx_lm.models.cache import make_prompt_cache

    from .reference import reference

    model, tokenizer = default_model
    turns = [("Name three colours of the rainbow.", 16),
             (" Now name two more, and say which one you like best.", 12),  # EOS at once (checked below)
             (" Then name two more colours of the rainbow, one per line:\n", 1),
             (" And one more:", 10)]
    cache = make_prompt_cache(model)
    want = [reference(model, tokenizer, t if i == 0 else tokenizer.encode(t, add_special_tokens=False), n, cache)
            for i, (t, n) in enumerate(turns)]
    assert want[1] == ""  # the EOS case really happens with this model
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, total_blocks=200), default_spec)
    blocks = None
    for (turn, max_tokens), expected in zip(turns, want):
        uid = engine.submit("agent", turn, blocks, max_tokens=max_tokens)
        (done,) = [c for c in engine.step() if c.uid == uid]
        assert done.text == expected
        blocks = done.blocks
    assert blocks.total_tokens == cache[0].offset  # the same context, token for token in length
    assert_blocks_accounted(engine, ["agent"])


def test_a_continued_turn_streams_its_first_token_in_the_step_that_reads_its_prompt(default_model, default_spec):
    """One pass reads a short continued prompt and samples its first token; that step's output
    reports the prompt as read and carries the token (no batched step before it goes out)."""
    model, tokenizer = default_model
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, total_blocks=120), default_spec)
    first = engine.submit("a", "Name a colour.", max_tokens=4)
    blocks = next(c for c in engine.step() if c.uid == first).blocks
    prompt = " And another one?"
    uid = engine.submit("a", prompt, blocks, max_tokens=4)
    out = engine.step_once()
    num_prompt = len(engine.encode(prompt, continues=True))
    assert [(p.uid, p.processed, p.total) for p in out.prefill] == [(uid, num_prompt, num_prompt)]
    assert [d.uid for d in out.deltas] == [uid]
    assert out.prefill_tokens == num_prompt
