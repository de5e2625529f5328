"""The pool's free block ids: empty ones first, then cached ones, least recently freed first."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable


class FreeQueue:
    """Free block ids in the order the pool hands them out.

    Empty blocks (no hash) go first, oldest first: reusing them loses nothing.
    Cached blocks (full, with a hash, no holder) follow, least recently freed
    first, as in vLLM's free queue; a prefix hit takes one out of the middle.
    """

    def __init__(self, empty_block_ids: Iterable[int] = ()) -> None:
        self._empty_ids: deque[int] = deque(empty_block_ids)
        self._cached_ids: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._empty_ids) + len(self._cached_ids)

    @property
    def num_cached(self) -> int:
        return len(self._cached_ids)

    def push_empty(self, block_id: int) -> None:
        self._empty_ids.append(block_id)

    def push_cached(self, block_id: int) -> None:
        """Append as the most recently freed cached block (reclaimed last)."""
        assert block_id not in self._cached_ids, f"block {block_id} cached twice"
        self._cached_ids[block_id] = None

    def pop(self) -> tuple[int, bool]:
        """The next block to hand out and whether it was cached (its hash must go)."""
        if self._empty_ids:
            return self._empty_ids.popleft(), False
        if self._cached_ids:
            block_id, _ = self._cached_ids.popitem(last=False)
            return block_id, True
        raise IndexError("pop from an empty FreeQueue")

    def pop_cached(self) -> int:
        """The least recently freed cached block, for reclaiming its hash."""
        block_id, _ = self._cached_ids.popitem(last=False)
        return block_id

    def take_cached(self, block_id: int) -> None:
        """Remove a cached block that a prefix hit revives."""
        del self._cached_ids[block_id]

    def is_cached(self, block_id: int) -> bool:
        return block_id in self._cached_ids

    def empty_ids(self) -> list[int]:
        return list(self._empty_ids)

    def cached_ids(self) -> list[int]:
        """Cached block ids, least recently freed first."""
        return list(self._cached_ids)
