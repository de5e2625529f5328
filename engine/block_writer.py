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

    def num_blocks_needed(self, agent: AgentBlocks, reserved: dict[int, list[Block]], context_tokens: int) -> int:
        """How many blocks, over all layers, a context of ``context_tokens`` still lacks."""
        return sum(self.blocks_needed(agent, reserved, context_tokens).values())

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
        num_tokens: int | None = None,
    ) -> CopyStats | None:
        """Store the tokens a turn added (``caches`` hold the whole context) in blocks.

        ``num_tokens``: keep only the context's first ``num_tokens`` tokens (a reply cut at
        a stop string). None, with nothing written, when sliding layers no longer hold
        what that shorter context needs (their window already dropped those tokens).
        """
        mx.eval([c.state[:2] for c in caches])
        layers = [cache_host_arrays(cache) for cache in caches]
        total = caches[0].offset
        if num_tokens is not None and num_tokens < total:
            layers = self._trimmed(layers, total, num_tokens)
            if layers is None:
                self.release(reserved)
                return None
            total, token_ids = num_tokens, token_ids[:num_tokens]
        return self.write_layers(agent, reserved, layers, total, token_ids)

    def _trimmed(
        self, layers: list[tuple[np.ndarray, np.ndarray]], total: int, keep: int
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        drop, out = total - keep, []
        for layer_id, (keys, values) in enumerate(layers):
            keys, values = keys[:, : keys.shape[1] - drop], values[:, : values.shape[1] - drop]
            if keys.shape[1] < self.spec.tokens_kept(layer_id, keep):
                return None
            out.append((keys, values))
        return out

    def write_layers(
        self,
        agent: AgentBlocks,
        reserved: dict[int, list[Block]],
        layers: list[tuple[np.ndarray, np.ndarray]],
        total_tokens: int,
        token_ids: list[int],
    ) -> CopyStats:
        """Write per-layer ``[H, T, D]`` K/V of a context of ``total_tokens`` into blocks.

        Global layers hold the whole context (only tokens past the agent's current
        ``total_tokens`` are written); sliding layers hold at least their window.
        """
        tic = time.perf_counter()
        n0, n1 = agent.total_tokens, total_tokens
        assert n1 >= n0, (n0, n1)
        num_blocks = num_bytes = 0
        for layer_id, (keys, values) in enumerate(layers):
            layer_reserved = reserved.get(layer_id, [])
            if self.spec.is_sliding(layer_id):
                kept = self.spec.tokens_kept(layer_id, n1)
                keys, values = keys[:, keys.shape[1] - kept :], values[:, values.shape[1] - kept :]
                num_blocks += self._write_sliding(agent, layer_id, layer_reserved, keys, values, n1)
            else:
                assert keys.shape[1] == n1, (layer_id, keys.shape, n1)
                keys, values = keys[:, n0:], values[:, n0:]
                num_blocks += self._write_global(agent, layer_id, layer_reserved, keys, values)
            num_bytes += keys.nbytes + values.nbytes
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
        """Re-pack the window's tokens (``keys``: exactly the kept ones) from the layer's first block."""
        bt, kept = self.spec.block_tokens, keys.shape[1]
        old = agent.layer_blocks(layer_id)
        agent.remove_blocks(layer_id, old)
        candidates = old + new_blocks
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
