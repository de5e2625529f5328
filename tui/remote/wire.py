"""What goes over the wire: the conversation as the request's JSON messages, and SSE frames.

The local engine keeps each agent's context in blocks, so the app sends it the new part
of the chat-template text. A server is stateless: every turn carries the whole
conversation. ``MessagesTemplate`` is the remote engine's "chat template": it renders
the messages as the JSON list the request body holds, so the app's turn planning is
unchanged and the server applies the model's real template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class MessagesTemplate:
    """The remote engine's ``engine.protocol.ChatTokenizer``: renders messages for the server, decodes nothing."""

    has_chat_template = True
    eos_token = ""
    eos_token_ids: tuple[int, ...] = ()

    def apply_chat_template(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
                            tokenize: bool = False) -> str:
        assert not tokenize, "a server takes messages, not token ids"
        return json.dumps(messages, ensure_ascii=False)

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool = False) -> str:
        """No token id of a server's context reaches this TUI (``adopt`` keeps none): nothing to decode."""
        return ""


def decode_messages(prompt: str) -> list[dict[str, str]]:
    """The messages ``MessagesTemplate`` rendered; ValueError for anything else."""
    try:
        messages = json.loads(prompt)
    except json.JSONDecodeError as exc:
        raise ValueError(f"a server turn needs the whole conversation as JSON messages, got {prompt[:60]!r}") from exc
    if not isinstance(messages, list) or not messages:
        raise ValueError("a server turn needs at least one message")
    return messages


def chat_body(model: str | None, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
              top_p: float = 1.0, stop: tuple[str, ...] = (), seed: int | None = None,
              cache_salt: str | None = None) -> dict[str, Any]:
    """A streamed chat request; ``top_p``, ``stop``, ``seed`` and ``cache_salt`` go only when
    they differ from the defaults."""
    body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                            "stream": True, "stream_options": {"include_usage": True}}
    if top_p != 1.0:
        body["top_p"] = top_p
    if stop:
        body["stop"] = list(stop)
    if seed is not None:
        body["seed"] = seed
    if cache_salt is not None:
        body["cache_salt"] = cache_salt
    if model is not None:
        body["model"] = model
    return body


@dataclass(frozen=True, slots=True)
class SseFrame:
    event: str  # "message" unless the server named it
    data: str


class SseParser:
    """Server-sent events, fed one text line at a time (comments and keep-alives skipped)."""

    def __init__(self) -> None:
        self._event, self._data = "message", []

    def feed(self, line: str) -> SseFrame | None:
        if not line:
            frame = SseFrame(self._event, "\n".join(self._data)) if self._data else None
            self._event, self._data = "message", []
            return frame
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None
