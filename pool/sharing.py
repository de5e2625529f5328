"""Operations on whole contexts that share blocks: fork, prefix hits, copy-on-write, hashing.

Built on the pool's public primitives (allocate, free, hold, register_hash), named by
``SharingPool``; BlockPool's methods of the same names run these under its lock. This
module never imports ``pool.block_pool``: the dependency runs one way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from pool.agent_blocks import AgentBlocks
from pool.block import Block
from pool.errors import PoolExhausted
from pool.prefix_hash import BlockHasher
from pool.prefix_index import PrefixMatch
from pool.spec import ModelCacheSpec


class SharingPool(Protocol):
    """The pool primitives whole-context operations are built on (``BlockPool`` has them all)."""

    spec: ModelCacheSpec
    hasher: BlockHasher

    @property
    def total_blocks(self) -> int: ...
    def block(self, block_id: int) -> Block: ...
    def free_blocks(self) -> int: ...
    def agent_block_count(self, agent_id: str) -> int: ...
    def holds(self, agent_id: str, block: Block) -> bool: ...
    def can_allocate(self, n_blocks: int) -> bool: ...
    def allocate(self, n_blocks: int, layer_id: int, agent_id: str) -> list[Block]: ...
    def free(self, blocks: Iterable[Block], agent_id: str | None = None) -> int: ...
    def hold(self, blocks: Iterable[Block], agent_id: str) -> int: ...
    def register_hash(self, block: Block, block_hash: int) -> Block: ...
    def forget_hash(self, block: Block) -> None: ...


@dataclass(frozen=True, slots=True)
class RegisterStats:
    """What `register_full_blocks` did to one context."""

    num_hashed: int  # blocks that now carry their hash
    num_deduplicated: int  # blocks swapped for an existing block with the same content


def fork(pool: SharingPool, source: AgentBlocks, new_agent_id: str) -> AgentBlocks:
    """A new agent holding every block of `source` (references +1, nothing copied)."""
    if new_agent_id == source.agent_id:
        raise ValueError(f"cannot fork agent {new_agent_id!r} into itself")
    if pool.agent_block_count(new_agent_id):
        raise ValueError(
            f"agent {new_agent_id!r} already holds {pool.agent_block_count(new_agent_id)} "
            "blocks; close it before forking into it"
        )
    blocks = source.all_blocks()
    stale = [b.block_id for b in blocks if not pool.holds(source.agent_id, b)]
    if stale:
        raise ValueError(
            f"agent {source.agent_id!r} no longer holds blocks {stale} in this pool; "
            "fork from its current context"
        )
    pool.hold(blocks, new_agent_id)
    forked = AgentBlocks(new_agent_id, source.total_tokens, list(source.token_ids), cache_salt=source.cache_salt)
    for layer_id in sorted(source.blocks):
        for block in source.blocks[layer_id]:
            forked.add_block(block)
    return forked


def acquire_prefix(pool: SharingPool, agent_id: str, match: PrefixMatch) -> AgentBlocks:
    """A new context for `agent_id` holding the blocks of `match` (cached ones revived)."""
    per_layer = [
        [_matched_block(pool, match, layer_id, block_id) for block_id in block_ids]
        for layer_id, block_ids in enumerate(match.layer_block_ids)
    ]
    pool.hold([b for blocks in per_layer for b in blocks], agent_id)
    agent = AgentBlocks(agent_id, match.num_tokens, list(match.token_ids))
    for blocks in per_layer:
        for block in blocks:
            agent.add_block(block)
    return agent


def _matched_block(pool: SharingPool, match: PrefixMatch, layer_id: int, block_id: int) -> Block:
    block = pool.block(block_id)
    bt = pool.spec.block_tokens
    index = None if block.token_start is None else block.token_start // bt
    fresh = (
        block.layer_id == layer_id
        and index is not None
        and index < match.num_blocks
        and block.block_hash == match.block_hashes[index]
    )
    if not fresh:
        raise ValueError(
            f"prefix match is stale: block {block_id} no longer holds layer {layer_id}'s "
            "matched tokens; look the prefix up again"
        )
    return block


def copy_on_write(
    pool: SharingPool, agent: AgentBlocks, blocks: Iterable[Block] | None = None
) -> list[tuple[int, int]]:
    """Make `blocks` (default: each layer's partial last block) writable for `agent`.

    A shared block is swapped for a fresh private one with the same token range
    (the engine copies the K/V: the returned (old_id, new_id) pairs); a private
    block only loses its hash. All or nothing: raises PoolExhausted first.
    """
    targets = _last_partial_blocks(agent) if blocks is None else list(blocks)
    if len({id(block) for block in targets}) != len(targets):
        raise ValueError("a block is listed twice for copy_on_write")
    for block in targets:
        if not pool.holds(agent.agent_id, block) or block not in agent.layer_blocks(block.layer_id):
            raise ValueError(f"block {block.block_id} is not in agent {agent.agent_id!r}'s context")
    num_shared = sum(block.is_shared for block in targets)
    if not pool.can_allocate(num_shared):
        raise PoolExhausted(num_shared, pool.free_blocks(), pool.total_blocks)
    pairs: list[tuple[int, int]] = []
    for old in targets:
        if not old.is_shared:
            pool.forget_hash(old)
            continue
        assert old.layer_id is not None
        new = pool.allocate(1, old.layer_id, agent.agent_id)[0]
        new.token_start, new.num_tokens = old.token_start, old.num_tokens
        agent.replace_block(old, new)
        pool.free([old], agent.agent_id)
        pairs.append((old.block_id, new.block_id))
    return pairs


def _last_partial_blocks(agent: AgentBlocks) -> list[Block]:
    return [layer[-1] for layer in agent.blocks.values() if layer and not layer[-1].is_full]


def register_full_blocks(
    pool: SharingPool, agent: AgentBlocks, layer_ids: Iterable[int] | None = None
) -> RegisterStats:
    """Hash the agent's full, block-aligned, unhashed blocks (after their K/V is written).

    A block whose content another block already carries is swapped for that
    one when private, so the pool keeps one copy of each prefix.
    """
    hashes = pool.hasher.block_hashes(agent.token_ids[: agent.total_tokens], salt=agent.cache_salt)
    bt = pool.spec.block_tokens
    num_hashed = num_deduplicated = 0
    for layer_id in sorted(agent.blocks) if layer_ids is None else sorted(set(layer_ids)):
        for block in agent.layer_blocks(layer_id):
            if not block.is_full or block.block_hash is not None or block.token_start is None:
                continue
            index, offset = divmod(block.token_start, bt)
            if offset or index >= len(hashes):
                continue
            kept = pool.register_hash(block, hashes[index])
            if kept is block:
                num_hashed += 1
            elif not block.is_shared and agent.agent_id not in kept.holder_ids:
                pool.hold([kept], agent.agent_id)
                agent.replace_block(block, kept)
                pool.free([block], agent.agent_id)
                num_deduplicated += 1
    return RegisterStats(num_hashed, num_deduplicated)
