"""The figures under a finished reply."""

from __future__ import annotations

from tui.reply_note import reply_note


def test_a_continued_turn_says_what_came_from_blocks_and_how_fast_it_went() -> None:
    note = reply_note(generated_tokens=24, finish_reason="length", cached_tokens=1024, continues=True,
                      ttft_s=0.314, decode_tok_s=6.42)
    assert note == "24 tok · first token 0.31 s · 6.4 tok/s · 1,024 tok reused from blocks · max tokens reached"


def test_a_fresh_turn_names_a_prefix_hit_and_leaves_out_what_the_engine_did_not_measure() -> None:
    assert reply_note(generated_tokens=3, finish_reason="stop", cached_tokens=256, continues=False,
                      ttft_s=None, decode_tok_s=None) == "3 tok · 256 tok from shared blocks"
    assert reply_note(generated_tokens=1, finish_reason="cancelled", cached_tokens=0, continues=False,
                      ttft_s=0.5, decode_tok_s=None) == "1 tok · first token 0.50 s · cancelled"
