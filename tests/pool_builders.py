"""Small pools and contexts written the way the engine writes them, for tests that need no model."""

from __future__ import annotations

from pool import AgentBlocks, BlockPool, ModelCacheSpec

BT = 4
PROMPT = list(range(10, 20))  # two full blocks and a partial one of two tokens


def small_spec(n_layers: int = 4) -> ModelCacheSpec:
    """Global layers of 4-token blocks, 2 KV heads of 8."""
    return ModelCacheSpec(
        n_layers=n_layers, n_kv_heads=2, head_dim=8, dtype="float16", block_tokens=4,
        layer_types=("global",) * n_layers,
    )


def global_spec(n_layers: int = 2) -> ModelCacheSpec:
    return ModelCacheSpec(
        n_layers=n_layers, n_kv_heads=1, head_dim=2, dtype="float16", block_tokens=BT,
        layer_types=("global",) * n_layers,
    )


def mixed_spec(window: int = 8) -> ModelCacheSpec:
    """Layer 0 global, layer 1 sliding."""
    return ModelCacheSpec(
        n_layers=2, n_kv_heads=1, head_dim=2, dtype="float16", block_tokens=BT,
        layer_types=("global", "sliding"), sliding_window=window,
    )


def write_context(
    pool: BlockPool, agent_id: str, token_ids: list[int], *, first_index: dict[int, int] | None = None
) -> AgentBlocks:
    """What the engine's write-back does: blocks for every layer, filled, then hashed.

    `first_index` makes a layer start at that block (a sliding layer that let older blocks go).
    """
    agent = AgentBlocks(agent_id, len(token_ids), list(token_ids))
    num_blocks = -(-len(token_ids) // BT)
    for layer_id in range(pool.spec.n_layers):
        start = (first_index or {}).get(layer_id, 0)
        for index, block in zip(range(start, num_blocks), pool.allocate(num_blocks - start, layer_id, agent_id)):
            block.token_start = index * BT
            block.num_tokens = min(BT, len(token_ids) - index * BT)
            agent.add_block(block)
    pool.register_full_blocks(agent)
    return agent
