"""Idle agents' contexts kept materialised as mlx-lm caches, inside a byte budget.

Blocks stay the source of truth: an entry is a copy of what gathering the agent's global
layers would give (``gather_layers``), kept from the end of its last turn so that the next
turn starts without a gather. It is used only while the agent's context is exactly the one
it was made from (same token ids), handed to the batch and not shared (the batch updates
it in place), and dropped, never written back, when anything else changes the context.
Least recently used entries go first when the budget is full.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from pool import AgentBlocks

from .batch_cache import PagedKVCache


@dataclass(slots=True)
class HotEntry:
    token_ids: list[int]
    caches: dict[int, PagedKVCache]  # global layers only

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.caches.values())


class HotSet:
    """``budget_bytes`` of materialised contexts (0: none kept)."""

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"hot cache budget must be >= 0 bytes, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, HotEntry] = OrderedDict()
        self.nbytes = 0
        self.num_hits = 0
        self.num_misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, agent_id: str) -> bool:
        return agent_id in self._entries

    def take(self, agent: AgentBlocks) -> dict[int, PagedKVCache] | None:
        """The agent's caches, now the caller's (removed from the set), when they hold exactly
        its context; else None (and a stale entry is dropped)."""
        entry = self._entries.pop(agent.agent_id, None)
        if entry is None:
            self.num_misses += 1
            return None
        self.nbytes -= entry.nbytes
        if len(entry.token_ids) != agent.total_tokens or entry.token_ids != agent.token_ids[: agent.total_tokens]:
            self.num_misses += 1
            return None
        self.num_hits += 1
        return entry.caches

    def put(self, agent: AgentBlocks, caches: dict[int, PagedKVCache]) -> None:
        """Keep ``caches`` (holding ``agent``'s whole context) for its next turn, making room
        by dropping the least recently used; an entry larger than the budget is not kept."""
        self.drop(agent.agent_id)
        entry = HotEntry(list(agent.token_ids[: agent.total_tokens]), caches)
        size = entry.nbytes
        if size > self.budget_bytes or not caches:
            return
        while self._entries and self.nbytes + size > self.budget_bytes:
            self._pop_oldest()
        self._entries[agent.agent_id] = entry
        self.nbytes += size

    def drop(self, agent_id: str) -> None:
        entry = self._entries.pop(agent_id, None)
        if entry is not None:
            self.nbytes -= entry.nbytes

    def drop_all(self, agent_ids: Sequence[str] | None = None) -> None:
        for agent_id in list(self._entries) if agent_ids is None else agent_ids:
            self.drop(agent_id)

    def _pop_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self.nbytes -= entry.nbytes
