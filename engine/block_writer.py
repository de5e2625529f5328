"""Block accounting for one turn: reserve blocks as a context grows, write new K/V back.

Reservation happens while a request runs (every allocation goes through the pool);
the K/V itself lives in mlx-lm's batch cache until the turn ends, then is written
into the agent's blocks: the last partial block first, then the reserved ones.
"""

from __future__ import annotations

import math
import time

import mlx.core as mx
import numpy as np

from pool import AgentBlocks, Block, BlockPool, ModelCacheSpec, PoolExhausted

from .kv_store import CopyStats, KVBlockStore, cache_host_arrays


class BlockWriter:
    def __init__(self, pool: BlockPool, store: KVBlockStore) -> None:
        self.pool = pool
        self.store = store
        self.spec: ModelCacheSpec = store.spec

    def blocks_needed(self, agent: AgentBlocks, reserved: dict[int, list[Block]], context_tokens: int) -> dict[int, int]:
        """Blocks per layer still missing for a context of ``context_tokens``."""
        needs: dict[int, int] = {}
        for layer_id in range(self.spec.n_layers):
            have = agent.num_layer_blocks(layer_id) + len(reserved.get(layer_id, ()))
            missing = self.spec.max_blocks_for_layer(layer_id, context_tokens) - have
            if missing > 0:
                needs[layer_id] = missing
        return needs

    def reserve(self, agent: AgentBlocks, reserved: dict[int, list[Block]], context_tokens: int) -> int:
        """Take the blocks a context of ``context_tokens`` needs, all or nothing.

        Raises PoolExhausted (nothing taken) when the pool cannot supply them.
        """
        needs = self.blocks_needed(agent, reserved, context_tokens)
        total = sum(needs.values())
        if total == 0:
            return 0
        if not self.pool.can_allocate(total):
            raise PoolExhausted(total, self.pool.free_blocks(), self.pool.total_blocks)
        taken: dict[int, list[Block]] = {}
        try:
            for layer_id, count in needs.items():
                taken[layer_id] = self.pool.allocate(count, layer_id, agent.agent_id)
        except PoolExhausted:  # another thread took blocks between the check and here
            self.pool.free([b for blocks in taken.values() for b in blocks])
            raise
        for layer_id, blocks in taken.items():
            reserved.setdefault(layer_id, []).extend(blocks)
        return total

    def release(self, reserved: dict[int, list[Block]]) -> None:
        """Give back blocks a turn reserved but did not fill."""
        blocks = [b for layer_blocks in reserved.values() for b in layer_blocks]
        reserved.clear()
        if blocks:
            self.pool.free(blocks)

    def write_back(
        self,
        agent: AgentBlocks,
        reserved: dict[int, list[Block]],
        caches: list,
        token_ids: list[int],
    ) -> CopyStats:
        """Store the tokens a turn added (``caches`` hold the whole context) in blocks."""
        tic = time.perf_counter()
        n0, n1 = agent.total_tokens, caches[0].offset
        assert n1 >= n0, (n0, n1)
        mx.eval([c.state[:2] for c in caches])
        num_blocks = num_bytes = 0
        for layer_id, cache in enumerate(caches):
            keys, values = cache_host_arrays(cache)
            layer_reserved = reserved.get(layer_id, [])
            if self.spec.is_sliding(layer_id):
                written = self._write_sliding(agent, layer_id, layer_reserved, keys, values, n1)
            else:
                assert keys.shape[1] == n1, (layer_id, keys.shape, n1)
                written = self._write_global(agent, layer_id, layer_reserved, keys[:, n0:], values[:, n0:])
            num_blocks += written
            num_bytes += keys[:, n0:].nbytes * 2 if not self.spec.is_sliding(layer_id) else keys.nbytes * 2
        agent.total_tokens = n1
        agent.token_ids = list(token_ids)
        self.release(reserved)
        ms = (time.perf_counter() - tic) * 1000
        return CopyStats(num_blocks, num_bytes, n1 - n0, ms)

    def _write_global(
        self, agent: AgentBlocks, layer_id: int, new_blocks: list[Block], keys: np.ndarray, values: np.ndarray
    ) -> int:
        bt, count, pos, touched = self.spec.block_tokens, keys.shape[1], 0, 0
        blocks = agent.layer_blocks(layer_id)
        if count and blocks and blocks[-1].num_tokens < bt:  # fill the partial block first
            last = blocks[-1]
            pos = min(count, bt - last.num_tokens)
            self.store.write(last, keys[:, :pos], values[:, :pos], last.num_tokens)
            last.num_tokens += pos
            touched += 1
        while pos < count:
            block = new_blocks.pop(0)
            take = min(bt, count - pos)
            self.store.write(block, keys[:, pos : pos + take], values[:, pos : pos + take], 0)
            block.num_tokens = take
            agent.add_block(block)
            pos += take
            touched += 1
        return touched

    def _write_sliding(
        self, agent: AgentBlocks, layer_id: int, new_blocks: list[Block], keys: np.ndarray, values: np.ndarray, n1: int
    ) -> int:
        """Re-pack the window's last tokens from the start of the layer's first block."""
        bt = self.spec.block_tokens
        kept = self.spec.tokens_kept(layer_id, n1)
        assert keys.shape[1] >= kept, (layer_id, keys.shape, kept)
        keys, values = keys[:, keys.shape[1] - kept :], values[:, values.shape[1] - kept :]
        old = agent.layer_blocks(layer_id)
        agent.remove_blocks(layer_id, list(old))
        candidates = list(old) + new_blocks
        new_blocks.clear()
        needed = math.ceil(kept / bt)
        use, surplus = candidates[:needed], candidates[needed:]
        for j, block in enumerate(use):
            take = min(bt, kept - j * bt)
            self.store.write(block, keys[:, j * bt : j * bt + take], values[:, j * bt : j * bt + take], 0)
            block.num_tokens = take
            block.token_start = n1 - kept + j * bt
            agent.add_block(block)
        if surplus:
            self.pool.free(surplus)
        return len(use)
