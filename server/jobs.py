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
