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

from .kv_format import KVTokens, concat_tokens
from .batch_cache import cache_arrays
from .kv_store import CopyStats, KVBlockStore

FloatLayer = tuple[mx.array, mx.array]  # a layer's float K and V, [H, T, D]


class BlockWriter:
    def __init__(self, pool: BlockPool, store: KVBlockStore) -> None:
        self.pool = pool
        self.store = store
        self.spec: ModelCacheSpec = store.spec
        self.copied = CopyStats(0, 0, 0, 0.0)  # copy-on-write copies of the last write_layers

    def blocks_needed(self, agent: AgentBlocks, reserved: dict[int, list[Block]], context_tokens: int) -> dict[int, int]:
        """Blocks per layer still missing for a context of ``context_tokens``.

        A shared block is never written: a global layer whose partial last block is shared
        needs one more (its private copy), and a sliding layer, which re-packs its window
        into its blocks, can reuse only the blocks it holds alone.
        """
        needs: dict[int, int] = {}
        for layer_id in range(self.spec.n_layers):
            blocks = agent.blocks.get(layer_id, [])
            if self.spec.is_sliding(layer_id):
                have = sum(not b.is_shared for b in blocks)
            else:
                copy = bool(blocks) and not blocks[-1].is_full and blocks[-1].is_shared
                have = len(blocks) - copy
            have += len(reserved.get(layer_id, ()))
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
            self.pool.free([b for blocks in taken.values() for b in blocks], agent.agent_id)
            raise
        for layer_id, blocks in taken.items():
            reserved.setdefault(layer_id, []).extend(blocks)
        return total

    def release(self, reserved: dict[int, list[Block]]) -> None:
        """Give back blocks a turn reserved but did not fill."""
        blocks = [b for layer_blocks in reserved.values() for b in layer_blocks]
        reserved.clear()
        if blocks:
            self.pool.free(blocks)  # reserved blocks are private: one holder each

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
        layers = [cache_arrays(cache) for cache in caches]
        total = caches[0].offset
        if num_tokens is not None and num_tokens < total:
            trimmed = self._trimmed(layers, total, num_tokens)
            if trimmed is None:
                self.release(reserved)
                return None
            layers, total, token_ids = trimmed, num_tokens, token_ids[:num_tokens]
        return self.write_layers(agent, reserved, self._new_tokens(agent, layers, total), total, token_ids)

    def _trimmed(self, layers: list[FloatLayer], total: int, keep: int) -> list[FloatLayer] | None:
        drop, out = total - keep, []
        for layer_id, (keys, values) in enumerate(layers):
            keys, values = keys[:, : keys.shape[1] - drop], values[:, : values.shape[1] - drop]
            if keys.shape[1] < self.spec.tokens_kept(layer_id, keep):
                return None
            out.append((keys, values))
        return out

    def _new_tokens(self, agent: AgentBlocks, layers: list[FloatLayer], n1: int) -> list[KVTokens[np.ndarray]]:
        """What ``write_layers`` takes, in the block format: global layers' tokens past the
        agent's ``total_tokens``, sliding layers' whole window.

        Only tokens the turn computed are encoded: a quantized sliding window keeps its older
        tokens' stored bytes (re-quantizing their dequantized floats would change them)."""
        n0, out = agent.total_tokens, []
        for layer_id, (keys, values) in enumerate(layers):
            if not self.spec.is_sliding(layer_id):
                assert keys.shape[1] == n1, (layer_id, keys.shape, n1)
                out.append(self.store.encode(keys[:, n0:], values[:, n0:]))
                continue
            kept, new = self.spec.tokens_kept(layer_id, n1), n1 - n0
            if not self.spec.quantized or new >= kept:
                out.append(self.store.encode(keys[:, keys.shape[1] - kept :], values[:, values.shape[1] - kept :]))
                continue
            old_kept = self.spec.tokens_kept(layer_id, n0)
            old = self.store.read_tokens(agent.layer_blocks(layer_id), old_kept - (kept - new), old_kept)
            fresh = self.store.encode(keys[:, keys.shape[1] - new :], values[:, values.shape[1] - new :])
            out.append(concat_tokens(old, fresh))
        return out

    def write_layers(
        self,
        agent: AgentBlocks,
        reserved: dict[int, list[Block]],
        layers: list[KVTokens[np.ndarray]],
        total_tokens: int,
        token_ids: list[int],
        *,
        more_to_come: bool = False,
    ) -> CopyStats:
        """Write per-layer K/V (in the block format) of a context of ``total_tokens`` into blocks.

        Global layers hold the tokens past the agent's current ``total_tokens`` (all of
        them for a restore, which starts from 0); sliding layers their whole window. What is
        left of ``reserved`` goes back to the pool, unless the turn has ``more_to_come``.
        """
        tic = time.perf_counter()
        n0, n1 = agent.total_tokens, total_tokens
        assert n1 >= n0, (n0, n1)
        num_blocks = num_bytes = 0
        self.copied = CopyStats(0, 0, 0, 0.0)
        for layer_id, tokens in enumerate(layers):
            layer_reserved = reserved.get(layer_id, [])
            if self.spec.is_sliding(layer_id):
                kept = self.spec.tokens_kept(layer_id, n1)
                assert tokens.num_tokens >= kept, (layer_id, tokens.num_tokens, kept)
                tokens = tokens.last(kept)
                num_blocks += self._write_sliding(agent, layer_id, layer_reserved, tokens, n1)
            else:
                assert tokens.num_tokens == n1 - n0, (layer_id, tokens.num_tokens, n0, n1)
                num_blocks += self._write_global(agent, layer_id, layer_reserved, tokens)
            num_bytes += tokens.nbytes
        agent.total_tokens = n1
        agent.token_ids = list(token_ids)
        if not more_to_come:
            self.release(reserved)
        ms = (time.perf_counter() - tic) * 1000
        return CopyStats(num_blocks, num_bytes, n1 - n0, ms)

    def _write_global(
        self, agent: AgentBlocks, layer_id: int, new_blocks: list[Block], tokens: KVTokens[np.ndarray]
    ) -> int:
        bt, count, pos, touched = self.spec.block_tokens, tokens.num_tokens, 0, 0
        blocks = agent.layer_blocks(layer_id)
        if count and blocks and blocks[-1].num_tokens < bt:  # fill the partial block first
            last = self._writable(agent, blocks[-1], new_blocks)
            pos = min(count, bt - last.num_tokens)
            self.store.write(last, tokens.tokens(0, pos), last.num_tokens)
            last.num_tokens += pos
            touched += 1
        while pos < count:
            block = new_blocks.pop(0)
            take = min(bt, count - pos)
            self.store.write(block, tokens.tokens(pos, pos + take), 0)
            block.num_tokens = take
            agent.add_block(block)
            pos += take
            touched += 1
        return touched

    def _write_sliding(
        self, agent: AgentBlocks, layer_id: int, new_blocks: list[Block], tokens: KVTokens[np.ndarray], n1: int
    ) -> int:
        """Re-pack the window's tokens (``tokens``: exactly the kept ones) from the layer's first block."""
        bt, kept = self.spec.block_tokens, tokens.num_tokens
        old = agent.layer_blocks(layer_id)
        agent.remove_blocks(layer_id, old)
        shared = [b for b in old if b.is_shared]  # never rewritten: let go of them instead
        if shared:
            self.pool.free(shared, agent.agent_id)
        for block in old:
            if not block.is_shared and block.block_hash is not None:
                self.pool.forget_hash(block)  # its content changes: no one may find it by hash
        candidates = [b for b in old if b not in shared] + new_blocks
        new_blocks.clear()
        needed = math.ceil(kept / bt)
        assert len(candidates) >= needed, f"layer {layer_id}: {len(candidates)} blocks for {needed}"
        use, surplus = candidates[:needed], candidates[needed:]
        for j, block in enumerate(use):
            take = min(bt, kept - j * bt)
            self.store.write(block, tokens.tokens(j * bt, j * bt + take), 0)
            block.num_tokens = take
            block.token_start = n1 - kept + j * bt
            agent.add_block(block)
        if surplus:
            self.pool.free(surplus, agent.agent_id)
        return len(use)

    def _writable(self, agent: AgentBlocks, block: Block, new_blocks: list[Block]) -> Block:
        """``block`` itself when the agent holds it alone, else its private copy (copy-on-write).

        The copy's block comes out of the turn's reservation (``blocks_needed`` counted it)."""
        if not block.is_shared:
            return block
        if new_blocks:
            self.pool.free([new_blocks.pop()])  # hand one reserved block back for the copy to take
        ((old_id, new_id),) = self.pool.copy_on_write(agent, [block])
        self.store.copy_block(old_id, new_id)
        c = self.copied
        self.copied = CopyStats(c.num_blocks + 1, c.num_bytes + self.spec.bytes_per_block, c.num_tokens + block.num_tokens, 0.0)
        return self.pool.block(new_id)
