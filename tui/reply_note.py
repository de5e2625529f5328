"""The line under a finished reply: its figures (tokens, time to first token, decode speed, tokens
that came from blocks instead of being read again) and why it stopped, when not at its end."""

from __future__ import annotations

FINISH_NOTES = {"stop": "", "length": "max tokens reached", "cancelled": "cancelled"}


def reply_note(*, generated_tokens: int, finish_reason: str, cached_tokens: int, continues: bool,
               ttft_s: float | None, decode_tok_s: float | None) -> str:
    """E.g. "24 tok · first token 0.31 s · 6.4 tok/s · 1,024 tok reused from blocks"."""
    reused = ""
    if cached_tokens:  # a continued context's own blocks, or a fresh prompt's prefix found shared
        reused = f"{cached_tokens:,} tok reused from blocks" if continues else f"{cached_tokens:,} tok from shared blocks"
    parts = [f"{generated_tokens} tok",
             f"first token {ttft_s:.2f} s" if ttft_s is not None else "",
             f"{decode_tok_s:.1f} tok/s" if decode_tok_s else "",
             reused, FINISH_NOTES.get(finish_reason, "")]
    return " · ".join(filter(None, parts))
