"""OpenAI request fields this server knows but cannot honour: each is refused with a 400 naming it,
never silently ignored (a client asking for tools or JSON output must not get plain text back)."""

from __future__ import annotations

from typing import Any

from .errors import APIError
from .schemas import ChatCompletionRequest, CompletionRequest

# field -> (is this value harmless?, what the server accepts)
_ACCEPTED: dict[str, tuple[Any, str]] = {
    "logprobs": (lambda v: v in (None, False, 0), "false or null"),  # True == 1 is not in there
    "logit_bias": (lambda v: not v, "{} or null"),
    "presence_penalty": (lambda v: not v, "0 or null"),
    "frequency_penalty": (lambda v: not v, "0 or null"),
    "response_format": (lambda v: v is None or v == {"type": "text"}, '{"type": "text"} or null'),
    "tools": (lambda v: not v, "[] or null"),
    "tool_choice": (lambda v: v in (None, "none"), '"none" or null'),
    "echo": (lambda v: not v, "false or null"),
}


def refuse_unsupported(body: ChatCompletionRequest | CompletionRequest) -> None:
    """Raises APIError (400, ``param`` = the field) for the first field set to what this server cannot do."""
    for field, (harmless, accepted) in _ACCEPTED.items():
        if field not in type(body).model_fields:
            continue
        value = getattr(body, field)
        if not harmless(value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise APIError(400, f"{field}={shown} is not supported by this server; send {accepted} or leave it "
                                "out", param=field, code="unsupported_parameter")
