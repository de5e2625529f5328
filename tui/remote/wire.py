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
    """Stands where the tokenizer stands for the app: renders messages for the server, decodes nothing."""

    has_chat_template = True
    eos_token = ""
    eos_token_ids: tuple[int, ...] = ()

    def apply_chat_template(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
                            tokenize: bool = False) -> str:
        assert not tokenize, "a server takes messages, not token ids"
        return json.dumps(messages, ensure_ascii=False)


def decode_messages(prompt: str) -> list[dict[str, str]]:
    """The messages ``MessagesTemplate`` rendered; ValueError for anything else."""
    try:
        messages = json.loads(prompt)
    except json.JSONDecodeError as exc:
        raise ValueError(f"a server turn needs the whole conversation as JSON messages, got {prompt[:60]!r}") from exc
    if not isinstance(messages, list) or not messages:
        raise ValueError("a server turn needs at least one message")
    return messages


def chat_body(model: str | None, messages: list[dict[str, str]], *, max_tokens: int,
              temperature: float) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                            "stream": True, "stream_options": {"include_usage": True}}
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
