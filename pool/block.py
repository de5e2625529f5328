"""One fixed-size slot of KV storage, as the pool tracks it."""

from __future__ import annotations

from typing import Any


class Block:
    """A block of `capacity` tokens for one layer, held by one or more agents.

    The pool owns the id, the holders and the hash; the engine fills the token
    range and keeps its arrays in `layer_data` (under "k" and "v"). A block with
    a `block_hash` is full and immutable: other agents may find and share it, and
    it stays findable after its last holder lets go, until the pool reuses it.
    Identity matters: two blocks are the same only if they are.
    """

    __slots__ = (
        "block_id", "layer_id", "holder_ids", "capacity", "token_start", "num_tokens",
        "block_hash", "layer_data",
    )

    def __init__(
        self,
        block_id: int,
        layer_id: int | None,
        agent_id: str | None,
        capacity: int,
        token_start: int | None = None,
        num_tokens: int = 0,
    ) -> None:
        self.block_id = block_id
        self.layer_id = layer_id  # None while free and uncached
        # Holders in the order they took the block; empty while free.
        self.holder_ids: tuple[str, ...] = (agent_id,) if agent_id is not None else ()
        self.capacity = capacity
        self.token_start = token_start  # absolute position of the first token
        self.num_tokens = num_tokens
        self.block_hash: int | None = None  # set (by the pool) once the block is full
        self.layer_data: dict[str, Any] = {}

    def __repr__(self) -> str:
        return (
            f"Block(block_id={self.block_id}, layer_id={self.layer_id}, "
            f"holder_ids={self.holder_ids}, token_start={self.token_start}, "
            f"num_tokens={self.num_tokens}/{self.capacity}, "
            f"hashed={self.block_hash is not None})"
        )

    @property
    def agent_id(self) -> str | None:
        """The first holder (the allocating agent while it holds on); None while free."""
        return self.holder_ids[0] if self.holder_ids else None

    @property
    def ref_count(self) -> int:
        return len(self.holder_ids)

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
        return not self.holder_ids

    @property
    def is_shared(self) -> bool:
        return len(self.holder_ids) > 1

    @property
    def is_cached(self) -> bool:
        """Free, but still findable by its hash."""
        return not self.holder_ids and self.block_hash is not None

    def reset(self) -> None:
        """Forget holders, layer, tokens, hash and arrays (the pool calls this on reuse)."""
        self.layer_id = None
        self.holder_ids = ()
        self.token_start = None
        self.num_tokens = 0
        self.block_hash = None
        self.layer_data = {}
