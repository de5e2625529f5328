"""The pool's bookkeeping and every read of it; BlockPool adds the actions."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from pool.block import Block
from pool.free_queue import FreeQueue
from pool.prefix_hash import BlockHasher
from pool.prefix_index import PrefixIndex, PrefixMatch
from pool.snapshot import PoolSnapshot, snapshot_of
from pool.spec import LayerType, ModelCacheSpec


class PoolState:
    """Blocks, their holders, the free queue and the hash index, behind one lock."""

    def __init__(self, spec: ModelCacheSpec, total_blocks: int, *, model_key: str = "") -> None:
        if total_blocks < 1:
            raise ValueError(f"total_blocks must be >= 1, got {total_blocks}")
        self.spec = spec
        self.hasher = BlockHasher(model_key, spec.block_tokens)
        self._blocks: list[Block] = [
            Block(i, None, None, spec.block_tokens) for i in range(total_blocks)
        ]
        self._free = FreeQueue(range(total_blocks))
        self._index = PrefixIndex(spec)
        self._agent_block_ids: dict[str, set[int]] = {}
        self._layer_num_blocks: list[int] = [0] * spec.n_layers  # held blocks per layer
        self._lock = threading.RLock()

    @property
    def total_blocks(self) -> int:
        return len(self._blocks)

    def block(self, block_id: int) -> Block:
        self._check_block_id(block_id)
        return self._blocks[block_id]

    def free_blocks(self) -> int:
        """Blocks no one holds, cached ones included."""
        with self._lock:
            return len(self._free)

    def used_blocks(self) -> int:
        """Blocks at least one agent holds (a shared block counts once)."""
        with self._lock:
            return self.total_blocks - len(self._free)

    def used_bytes(self) -> int:
        return self.used_blocks() * self.spec.bytes_per_block

    def total_bytes(self) -> int:
        return self.total_blocks * self.spec.bytes_per_block

    def num_cached_blocks(self, layer_type: LayerType | None = None) -> int:
        """Free blocks that keep their hash (of one layer type, or all)."""
        with self._lock:
            if layer_type is None:
                return self._free.num_cached
            layer_ids = [self._blocks[i].layer_id for i in self._free.cached_ids()]
            return sum(self.spec.layer_types[i] == layer_type for i in layer_ids if i is not None)

    def num_shared_blocks(self) -> int:
        """Held blocks with more than one holder."""
        with self._lock:
            return sum(b.is_shared for b in self._blocks)

    def agent_block_count(self, agent_id: str) -> int:
        with self._lock:
            return len(self._agent_block_ids.get(agent_id, ()))

    def agent_ids(self) -> list[str]:
        """Agents holding at least one block."""
        with self._lock:
            return list(self._agent_block_ids)

    def agent_usage(self) -> dict[str, int]:
        """Blocks each agent holds (a shared block counts for every holder)."""
        with self._lock:
            return {agent: len(ids) for agent, ids in self._agent_block_ids.items()}

    def layer_usage(self) -> list[int]:
        """Held blocks per layer, indexed by layer id."""
        with self._lock:
            return list(self._layer_num_blocks)

    def owner_of(self, block_id: int) -> str | None:
        """The block's first holder, None if free."""
        self._check_block_id(block_id)
        with self._lock:
            return self._blocks[block_id].agent_id

    def holders_of(self, block_id: int) -> tuple[str, ...]:
        self._check_block_id(block_id)
        with self._lock:
            return self._blocks[block_id].holder_ids

    def holds(self, agent_id: str, block: Block) -> bool:
        """Whether `block` is this pool's and `agent_id` holds it."""
        with self._lock:
            return self._owns(block) and agent_id in block.holder_ids

    def is_shared(self, block: Block) -> bool:
        """More than one holder: the block must not be written (copy it first)."""
        with self._lock:
            return block.is_shared

    def is_writable(self, block: Block, agent_id: str) -> bool:
        """Held by `agent_id` alone and not named by a hash."""
        with self._lock:
            return (
                self._owns(block) and block.holder_ids == (agent_id,) and block.block_hash is None
            )

    def snapshot(self) -> PoolSnapshot:
        """An immutable, consistent picture of the held and cached blocks."""
        with self._lock:
            held = [b for b in self._blocks if not b.is_free]
            cached = [self._blocks[i] for i in self._free.cached_ids()]
            return snapshot_of(self.spec, self.total_blocks, held, cached)

    def lookup_prefix(self, token_ids: Sequence[int], salt: str | None = None) -> PrefixMatch:
        """The longest run of leading full blocks of `token_ids` that every layer holds.

        Read-only. Pass a prompt without its last token so at least one is prefilled.
        """
        hashes = self.hasher.block_hashes(token_ids, salt=salt)
        with self._lock:
            cut, num_global = self._index.longest_cut(hashes)
            layer_ids = self._index.layer_block_ids(hashes, cut)
            num_cached = sum(self._blocks[i].is_free for ids in layer_ids for i in ids)
        return PrefixMatch(
            token_ids=tuple(token_ids[: cut * self.spec.block_tokens]),
            block_hashes=tuple(hashes[:cut]),
            layer_block_ids=layer_ids,
            num_query_blocks=len(hashes),
            num_global_blocks=num_global,
            num_cached_blocks=num_cached,
        )

    def check_invariants(self) -> None:
        """Assert the bookkeeping is self-consistent (for tests and debugging)."""
        with self._lock:
            self._check_free_queue()
            self._check_holders()
            self._check_index()

    # -- internals ------------------------------------------------------------

    def _owns(self, block: Block) -> bool:
        in_pool = 0 <= block.block_id < len(self._blocks)
        return in_pool and self._blocks[block.block_id] is block

    def _check_block_id(self, block_id: int) -> None:
        if not 0 <= block_id < self.total_blocks:
            raise ValueError(f"block_id {block_id} outside [0, {self.total_blocks})")

    def _check_blocks(self, blocks: list[Block]) -> None:
        seen_ids: set[int] = set()
        for block in blocks:
            if not self._owns(block):
                raise ValueError(f"block {block.block_id} does not belong to this pool")
            if block.block_id in seen_ids:
                raise ValueError(f"block {block.block_id} passed twice")
            seen_ids.add(block.block_id)

    def _holder_to_drop(self, block: Block, agent_id: str | None) -> str:
        if block.is_free:
            raise ValueError(f"block {block.block_id} is already free")
        if agent_id is None:
            if block.is_shared:
                raise ValueError(
                    f"block {block.block_id} is held by {quote_names(block.holder_ids)}; "
                    "pass agent_id to say whose reference to drop"
                )
            return block.holder_ids[0]
        if agent_id not in block.holder_ids:
            raise ValueError(
                f"block {block.block_id} is held by {quote_names(block.holder_ids)}, not {agent_id!r}"
            )
        return agent_id

    def _check_free_queue(self) -> None:
        empty_ids, cached_ids = self._free.empty_ids(), self._free.cached_ids()
        free_ids = set(empty_ids) | set(cached_ids)
        assert len(free_ids) == len(empty_ids) + len(cached_ids), "duplicate id in free queue"
        for block in self._blocks:
            assert block.is_free == (block.block_id in free_ids), (
                f"block {block.block_id} on the free queue: {block.block_id in free_ids}, "
                f"holders {block.holder_ids}"
            )
        for block_id in empty_ids:
            block = self._blocks[block_id]
            assert block.layer_id is None and block.block_hash is None, f"empty block {block_id} used"
        for block_id in cached_ids:
            assert self._blocks[block_id].is_cached, f"cached block {block_id} has no hash"

    def _check_holders(self) -> None:
        held: dict[str, set[int]] = {}
        layer_counts = [0] * self.spec.n_layers
        for block in self._blocks:
            assert len(set(block.holder_ids)) == block.ref_count, f"block {block.block_id} held twice"
            for agent_id in block.holder_ids:
                held.setdefault(agent_id, set()).add(block.block_id)
            if not block.is_free:
                assert block.layer_id is not None, f"block {block.block_id} has no layer"
                layer_counts[block.layer_id] += 1
        assert held == self._agent_block_ids, "per-agent block ids out of sync"
        assert layer_counts == self._layer_num_blocks, "per-layer counts out of sync"

    def _check_index(self) -> None:
        hashed = {
            (b.layer_id, b.block_hash): b.block_id for b in self._blocks if b.block_hash is not None
        }
        assert hashed == self._index.entries(), "hash index out of sync with the blocks"
        for block in self._blocks:
            if block.block_hash is not None:
                assert block.is_full and block.token_start is not None, (
                    f"hashed block {block.block_id} is not full"
                )
                assert block.token_start % self.spec.block_tokens == 0, "hashed block unaligned"


def check_agent_id(agent_id: str) -> None:
    if not agent_id or not isinstance(agent_id, str):
        raise ValueError(f"agent_id must be a non-empty string, got {agent_id!r}")


def quote_names(agent_ids: tuple[str, ...]) -> str:
    return ", ".join(repr(a) for a in agent_ids)
