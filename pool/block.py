"""One fixed-size slot of KV storage, as the pool tracks it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, eq=False)
class Block:
    """A block of `capacity` tokens for one layer of one agent.

    The pool owns the id and the owner fields; the engine fills the token
    range and keeps its arrays in `layer_data` (under "k" and "v").
    Identity matters (eq=False): two blocks are the same only if they are.
    """

    block_id: int
    layer_id: int | None  # None while free
    agent_id: str | None  # owner; None while free
    capacity: int
    token_start: int | None = None  # absolute position of the first token
    num_tokens: int = 0
    layer_data: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def token_end(self) -> int | None:
        """One past the last filled position; None before a range is set."""
        if self.token_start is None:
            return None
        return self.token_start + self.num_tokens

    @property
    def is_full(self) -> bool:
        return self.num_tokens >= self.capacity

    @property
    def is_free(self) -> bool:
        return self.agent_id is None

    def reset(self) -> None:
        """Forget owner, layer, tokens and arrays (the pool calls this on free)."""
        self.layer_id = None
        self.agent_id = None
        self.token_start = None
        self.num_tokens = 0
        self.layer_data = {}
