"""Immutable pictures of the pool, safe to hand to another thread."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """One used block at the moment of the snapshot."""

    block_id: int
    layer_id: int
    agent_id: str
    token_start: int | None
    num_tokens: int


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """The pool's state at one instant; `blocks` lists used blocks only."""

    total_blocks: int
    block_tokens: int
    bytes_per_block: int
    n_layers: int
    layer_types: tuple[str, ...]
    blocks: tuple[BlockInfo, ...]

    def used_blocks(self) -> int:
        return len(self.blocks)

    def free_blocks(self) -> int:
        return self.total_blocks - len(self.blocks)

    def used_bytes(self) -> int:
        return len(self.blocks) * self.bytes_per_block

    def by_layer(self) -> dict[int, list[BlockInfo]]:
        """Used blocks grouped by layer; every layer has a (maybe empty) list."""
        grouped: dict[int, list[BlockInfo]] = {i: [] for i in range(self.n_layers)}
        for info in self.blocks:
            grouped[info.layer_id].append(info)
        return grouped

    def agent_usage(self) -> dict[str, int]:
        """Used blocks per owning agent."""
        return dict(Counter(info.agent_id for info in self.blocks))
