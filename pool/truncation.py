"""Rolling a context back: keep its first tokens, give the pool back the blocks past them.

Built on the pool's public primitives (``SharingPool``), like ``pool.sharing``; BlockPool's
``truncate`` runs it under its lock. Bookkeeping only: the engine copies the K/V of any
block swapped for a private copy (the returned pairs).
"""

from __future__ import annotations

from pool.agent_blocks import AgentBlocks
from pool.block import Block
from pool.errors import PoolExhausted
from pool.sharing import SharingPool
from pool.spec import ModelCacheSpec


def can_truncate_in_place(spec: ModelCacheSpec, agent: AgentBlocks, n_tokens: int) -> bool:
    """Every layer still holds what a context of ``n_tokens`` needs: a sliding layer that let
    go of blocks older than ``n_tokens - window`` cannot be rolled back without a re-prefill."""
    for layer_id, layer in agent.blocks.items():
        window = spec.sliding_window if spec.is_sliding(layer_id) else None
        needed_from = 0 if window is None else max(0, n_tokens - window)
        if (layer[0].token_start or 0) > needed_from:
            return False
    return True


def truncate(pool: SharingPool, agent: AgentBlocks, n_tokens: int) -> list[tuple[int, int]]:
    """Keep ``agent``'s first ``n_tokens``: whole blocks past them are released (a hashed one
    stays cached, findable by others), a partly kept block is trimmed, swapped first for a
    private copy when another agent shares it. Returns those (old_id, new_id) pairs.

    All or nothing: ValueError for a bad ``n_tokens`` or a sliding window that no longer
    covers it, PoolExhausted when a shared block cannot be copied.
    """
    if not 0 <= n_tokens <= agent.total_tokens:
        raise ValueError(f"cannot keep {n_tokens} tokens of agent {agent.agent_id!r}'s context: "
                         f"it holds {agent.total_tokens}; pick 0..{agent.total_tokens}")
    if not can_truncate_in_place(pool.spec, agent, n_tokens):
        raise ValueError(f"agent {agent.agent_id!r}'s sliding window no longer holds the tokens before "
                         f"{n_tokens}; re-prefill the kept part instead")
    partial = [b for b in agent.all_blocks() if _cuts(b, n_tokens)]
    num_copies = sum(block.is_shared for block in partial)
    if not pool.can_allocate(num_copies):
        raise PoolExhausted(num_copies, pool.free_blocks(), pool.total_blocks)
    pairs = [_trim(pool, agent, block, n_tokens) for block in partial]
    for layer_id in list(agent.blocks):
        past = [b for b in agent.blocks[layer_id] if (b.token_start or 0) >= n_tokens]
        if past:
            agent.remove_blocks(layer_id, past)
            pool.free(past, agent.agent_id)
    agent.total_tokens, agent.token_ids = n_tokens, agent.token_ids[:n_tokens]
    return [pair for pair in pairs if pair is not None]


def _cuts(block: Block, n_tokens: int) -> bool:
    start = block.token_start or 0
    return start < n_tokens < start + block.num_tokens


def _trim(pool: SharingPool, agent: AgentBlocks, block: Block, n_tokens: int) -> tuple[int, int] | None:
    """Cut ``block`` at ``n_tokens``: in place when private (it loses its hash: it is no longer
    full), else on a private copy, whose id is returned with the shared one's."""
    assert block.layer_id is not None and block.token_start is not None
    kept = n_tokens - block.token_start
    if not block.is_shared:
        pool.forget_hash(block)
        block.num_tokens = kept
        return None
    copy = pool.allocate(1, block.layer_id, agent.agent_id)[0]
    copy.token_start, copy.num_tokens = block.token_start, kept
    agent.replace_block(block, copy)
    pool.free([block], agent.agent_id)
    return block.block_id, copy.block_id
