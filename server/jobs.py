"""What a request's stream receives from the engine link, besides the owner thread's
``RequestAccepted`` / ``RequestRefused``: its text, one step at a time, then its end.

Frozen dataclasses: safe to hand from the owner thread to the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str
    num_tokens: int


@dataclass(frozen=True, slots=True)
class Finished:
    """The reply's end. ``prompt_tokens``: the whole prompt; ``cached_tokens``: those served
    from blocks (a continued conversation or a prefix hit)."""

    text: str
    finish_reason: Literal["stop", "length", "cancelled", "error"]
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Abandoned:
    """The server gave the request up (past its deadline, or a reader that stopped reading): it was
    dropped in the engine, its blocks freed; the client gets ``status`` (504) or an error event."""

    message: str
    status: int = 504


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """No text for a while (a long prefill, a queue): a stream sends an SSE comment so proxies and
    clients with read timeouts know the server is still there."""
