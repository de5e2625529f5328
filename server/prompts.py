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
    for index, message in enumerate(messages):
        check_unicode(message.text(), f"messages.{index}.content")
    return encode_text(tokenizer, render_messages(tokenizer, messages))


def check_unicode(text: str, param: str) -> None:
    """Refuse text that UTF-8 cannot hold (a lone surrogate such as JSON's "\\ud800"): the tokenizer
    would raise a TypeError deep inside instead of naming the problem."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise APIError(400, f"{param} is not valid Unicode: {exc.reason} {text[exc.start]!r} at index "
                            f"{exc.start}; send UTF-8 text (a lone surrogate has no character)",
                       param=param, code="invalid_text") from exc


def render_messages(tokenizer: ChatTokenizer, messages: Sequence[RequestMessage]) -> str:
    turns = [{"role": ROLE_ALIASES.get(m.role, m.role), "content": m.text()} for m in messages]
    try:
        return render_chat(tokenizer, turns, True)
    except TemplateError as exc:  # e.g. "roles must alternate user/assistant"
        raise APIError(400, f"the model's chat template refused these messages: {exc}", param="messages",
                       code="invalid_messages") from exc


def encode_text(tokenizer: Any, text: str, param: str = "messages") -> list[int]:
    check_unicode(text, param)
    bos = tokenizer.bos_token
    try:
        ids = list(tokenizer.encode(text, add_special_tokens=bos is None or not text.startswith(bos)))
    except (TypeError, ValueError) as exc:  # what a tokenizer raises for text it cannot take
        raise APIError(400, f"the tokenizer cannot encode this {param}: {exc}", param=param,
                       code="invalid_text") from exc
    if not ids:
        raise APIError(400, "the prompt is empty once tokenized; send some text", param="prompt",
                       code="empty_prompt")
    return ids


def completion_prompt_ids(tokenizer: Any, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        return encode_text(tokenizer, prompt, "prompt")
    vocab = len(tokenizer)
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise APIError(400, f"prompt has {len(bad)} token ids outside 0..{vocab - 1} (first {bad[0]})",
                       param="prompt", code="invalid_token_ids")
    return list(prompt)
