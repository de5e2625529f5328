"""Request bodies to prompt token ids, exactly as mlx-lm would tokenize them.

Chat messages go through the model's chat template as text, then that text is
encoded like ``mlx_lm.generate`` encodes a string prompt (special tokens added
unless the text already starts with BOS), so a served reply can be checked
against ``mlx_lm.generate`` on the same rendered prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError

from engine.protocol import ChatTokenizer, render_chat

from .errors import APIError
from .schemas import RequestMessage

ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role


def chat_prompt_ids(tokenizer: Any, messages: Sequence[RequestMessage]) -> list[int]:
    return encode_text(tokenizer, render_messages(tokenizer, messages))


def render_messages(tokenizer: ChatTokenizer, messages: Sequence[RequestMessage]) -> str:
    turns = [{"role": ROLE_ALIASES.get(m.role, m.role), "content": m.text()} for m in messages]
    try:
        return render_chat(tokenizer, turns, True)
    except TemplateError as exc:  # e.g. "roles must alternate user/assistant"
        raise APIError(400, f"the model's chat template refused these messages: {exc}", param="messages",
                       code="invalid_messages") from exc


def encode_text(tokenizer: Any, text: str) -> list[int]:
    bos = tokenizer.bos_token
    try:
        ids = list(tokenizer.encode(text, add_special_tokens=bos is None or not text.startswith(bos)))
    except UnicodeEncodeError as exc:
        raise APIError(400, f"the text is not valid Unicode ({exc.reason} at index {exc.start})",
                       code="invalid_text") from exc
    if not ids:
        raise APIError(400, "the prompt is empty once tokenized; send some text", param="prompt",
                       code="empty_prompt")
    return ids


def completion_prompt_ids(tokenizer: Any, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        return encode_text(tokenizer, prompt)
    vocab = len(tokenizer)
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise APIError(400, f"prompt has {len(bad)} token ids outside 0..{vocab - 1} (first {bad[0]})",
                       param="prompt", code="invalid_token_ids")
    return list(prompt)
