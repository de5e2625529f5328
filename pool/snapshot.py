"""Immutable pictures of the pool, safe to hand to another thread."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pool.block import Block
from pool.spec import ModelCacheSpec


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """One used (or cached) block at the moment of the snapshot.

    `agent_id` is the first holder (None for a cached block); `holder_ids`
    lists every holder and defaults to just `agent_id`.
    """

    block_id: int
    layer_id: int
    agent_id: str | None
    token_start: int | None
    num_tokens: int
    holder_ids: tuple[str, ...] | None = None
    block_hash: int | None = None

    def __post_init__(self) -> None:
        if self.holder_ids is None:
            holders = (self.agent_id,) if self.agent_id is not None else ()
            object.__setattr__(self, "holder_ids", holders)

    @property
    def ref_count(self) -> int:
        return len(self.holder_ids or ())

    @property
    def is_shared(self) -> bool:
        return self.ref_count > 1


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """The pool's state at one instant.

    `blocks` lists held blocks only; `cached_blocks` the free ones that keep a
    hash (they count as free).
    """

    total_blocks: int
    block_tokens: int
    bytes_per_block: int
    n_layers: int
    layer_types: tuple[str, ...]
    blocks: tuple[BlockInfo, ...]
    cached_blocks: tuple[BlockInfo, ...] = ()
    kv_format: str = "float16"  # how blocks hold K/V (ModelCacheSpec.kv_format): float dtype, q8/g64 ...

    def used_blocks(self) -> int:
        return len(self.blocks)

    def free_blocks(self) -> int:
        return self.total_blocks - len(self.blocks)

    def used_bytes(self) -> int:
        return len(self.blocks) * self.bytes_per_block

    def num_cached_blocks(self) -> int:
        return len(self.cached_blocks)

    def num_shared_blocks(self) -> int:
        """Held blocks with more than one holder."""
        return sum(info.is_shared for info in self.blocks)

    def num_saved_blocks(self) -> int:
        """Blocks sharing saves: each holder past the first would need its own copy."""
        return sum(info.ref_count - 1 for info in self.blocks)

    def by_layer(self) -> dict[int, list[BlockInfo]]:
        """Used blocks grouped by layer; every layer has a (maybe empty) list."""
        grouped: dict[int, list[BlockInfo]] = {i: [] for i in range(self.n_layers)}
        for info in self.blocks:
            grouped[info.layer_id].append(info)
        return grouped

    def own_usage(self) -> dict[str, int]:
        """Blocks each agent holds alone; with ``num_shared_blocks`` they add up to ``used_blocks``."""
        return dict(Counter(info.agent_id for info in self.blocks if not info.is_shared and info.agent_id))

    def agent_usage(self) -> dict[str, int]:
        """Blocks each agent holds (a shared block counts for every holder)."""
        return dict(Counter(h for info in self.blocks for h in info.holder_ids or ()))


def block_info(block: Block) -> BlockInfo:
    assert block.layer_id is not None, f"block {block.block_id} has no layer"
    return BlockInfo(
        block.block_id, block.layer_id, block.agent_id, block.token_start, block.num_tokens,
        block.holder_ids, block.block_hash,
    )


def snapshot_of(
    spec: ModelCacheSpec, total_blocks: int, held: Iterable[Block], cached: Iterable[Block]
) -> PoolSnapshot:
    return PoolSnapshot(
        total_blocks=total_blocks,
        block_tokens=spec.block_tokens,
        bytes_per_block=spec.bytes_per_block,
        n_layers=spec.n_layers,
        layer_types=tuple(spec.layer_types),
        blocks=tuple(block_info(b) for b in held),
        cached_blocks=tuple(block_info(b) for b in cached),
        kv_format=spec.kv_format,
    )
