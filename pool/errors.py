"""Exceptions raised at the pool's public boundary."""

from __future__ import annotations


class PoolExhausted(RuntimeError):
    """Not enough free blocks for an all-or-nothing allocation."""

    def __init__(self, requested: int, free: int, total: int) -> None:
        self.requested = requested
        self.free = free
        self.total = total
        super().__init__(
            f"block pool exhausted: requested {requested} blocks, {free} free of "
            f"{total} total; free an agent's blocks or give the pool more memory"
        )


class UnsupportedCacheError(ValueError):
    """The model uses a cache type whose layers cannot be stored in blocks."""
