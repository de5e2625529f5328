"""How the engine thread describes the engine and its tokenizer to the app: plain values only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tui.units import readable_bytes


def renderer(tokenizer: Any) -> Callable[[list[dict[str, str]], bool], str]:
    if not getattr(tokenizer, "has_chat_template", True):
        return plain_render

    def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)

    return render


def decode_context(tokenizer: Any, token_ids: tuple[int, ...]) -> str | None:
    """The exact text of ``token_ids``, or None when the tokenizer cannot tell (the chat logic then starts fresh)."""
    decode = getattr(tokenizer, "decode", None)
    if decode is None:
        return None
    try:
        return decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    except TypeError:  # a tokenizer without those options: its plain decode
        return decode(list(token_ids))


def plain_render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """A template for models that have none: 'Role: text' paragraphs."""
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
    return text + ("Assistant:" if add_generation_prompt else "")


def describe(engine: Any) -> str:
    """One line for the header after the model's name: layers, blocks, their format and size.

    E.g. ``30 layers · 4,854 q8/g64 blocks × 256 tok, 108 KiB each``: sized to fit a
    120-column header beside the default model's name, so the pool's total bytes are
    left to the block pool panel's first line.
    """
    if isinstance(text := getattr(engine, "description", None), str):  # an engine elsewhere (a server) says itself
        return text
    pool = engine.pool
    spec = pool.spec
    return (f"{spec.n_layers} layers · {pool.total_blocks:,} {spec.kv_format} blocks × {spec.block_tokens} tok, "
            f"{readable_bytes(spec.bytes_per_block)} each")
