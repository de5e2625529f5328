"""A fixed set of KV blocks handed out to (agent, layer) owners."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable

from pool.block import Block
from pool.errors import PoolExhausted
from pool.snapshot import BlockInfo, PoolSnapshot
from pool.spec import ModelCacheSpec

logger = logging.getLogger(__name__)

# on_change(kind, agent_id, layer_id, block_ids), kind is "allocate" or "free".
ChangeObserver = Callable[[str, str, int, list[int]], None]


class BlockPool:
    """Ids, owners and counts of `total_blocks` blocks; no tensors.

    Every public method takes one re-entrant lock, so readers on other
    threads see consistent values. Allocation is all-or-nothing.
    """

    def __init__(
        self,
        spec: ModelCacheSpec,
        total_blocks: int,
        *,
        on_change: ChangeObserver | None = None,
    ) -> None:
        if total_blocks < 1:
            raise ValueError(f"total_blocks must be >= 1, got {total_blocks}")
        self.spec = spec
        self._blocks: list[Block] = [
            Block(i, None, None, spec.block_tokens) for i in range(total_blocks)
        ]
        self._free_block_ids: deque[int] = deque(range(total_blocks))
        self._agent_block_ids: dict[str, set[int]] = {}
        self._layer_num_blocks: list[int] = [0] * spec.n_layers
        self._on_change = on_change
        self._lock = threading.RLock()

    @classmethod
    def from_memory_budget(
        cls,
        spec: ModelCacheSpec,
        budget_bytes: int,
        *,
        on_change: ChangeObserver | None = None,
    ) -> BlockPool:
        """As many blocks as fit in `budget_bytes`."""
        total_blocks = budget_bytes // spec.bytes_per_block
        if total_blocks < 1:
            raise ValueError(
                f"budget of {budget_bytes} bytes holds no block; "
                f"one block needs {spec.bytes_per_block} bytes"
            )
        return cls(spec, total_blocks, on_change=on_change)

    # -- actions ---------------------------------------------------------

    def set_observer(self, on_change: ChangeObserver | None) -> None:
        """Replace the allocate/free observer (the engine hooks its telemetry here)."""
        self._on_change = on_change

    def can_allocate(self, n_blocks: int) -> bool:
        with self._lock:
            return n_blocks <= len(self._free_block_ids)

    def allocate(self, n_blocks: int, layer_id: int, agent_id: str) -> list[Block]:
        """Give `agent_id` `n_blocks` empty blocks for `layer_id`, or raise."""
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        if not 0 <= layer_id < self.spec.n_layers:
            raise ValueError(f"layer_id {layer_id} outside [0, {self.spec.n_layers})")
        if not agent_id:
            raise ValueError(f"agent_id must be a non-empty string, got {agent_id!r}")
        with self._lock:
            if not self.can_allocate(n_blocks):
                raise PoolExhausted(n_blocks, len(self._free_block_ids), self.total_blocks)
            blocks = [self._blocks[self._free_block_ids.popleft()] for _ in range(n_blocks)]
            for block in blocks:
                assert block.is_free, f"block {block.block_id} on free list but owned"
                block.layer_id, block.agent_id = layer_id, agent_id
            block_ids = [b.block_id for b in blocks]
            self._agent_block_ids.setdefault(agent_id, set()).update(block_ids)
            self._layer_num_blocks[layer_id] += n_blocks
        self._notify("allocate", agent_id, layer_id, block_ids)
        return blocks

    def free(self, blocks: Iterable[Block]) -> int:
        """Return blocks to the pool; all are validated before any is freed."""
        blocks = list(blocks)
        with self._lock:
            self._check_freeable(blocks)
            groups = self._release(blocks)
        self._notify_freed(groups)
        return len(blocks)

    def free_agent_blocks(self, agent_id: str) -> int:
        """Free every block `agent_id` owns; returns how many (0 if none)."""
        with self._lock:
            owned_ids = sorted(self._agent_block_ids.get(agent_id, ()))
            groups = self._release([self._blocks[i] for i in owned_ids])
        self._notify_freed(groups)
        return len(owned_ids)

    def _check_freeable(self, blocks: list[Block]) -> None:
        seen_ids: set[int] = set()
        for block in blocks:
            in_pool = 0 <= block.block_id < len(self._blocks)
            if not in_pool or self._blocks[block.block_id] is not block:
                raise ValueError(f"block {block.block_id} does not belong to this pool")
            if block.is_free:
                raise ValueError(f"block {block.block_id} is already free")
            if block.block_id in seen_ids:
                raise ValueError(f"block {block.block_id} passed twice to free()")
            seen_ids.add(block.block_id)

    def _release(self, blocks: list[Block]) -> dict[tuple[str, int], list[int]]:
        """Free validated blocks; returns freed ids grouped by (agent, layer)."""
        groups: dict[tuple[str, int], list[int]] = {}
        for block in blocks:
            agent_id, layer_id = block.agent_id, block.layer_id
            assert agent_id is not None and layer_id is not None
            groups.setdefault((agent_id, layer_id), []).append(block.block_id)
            owned = self._agent_block_ids[agent_id]
            owned.remove(block.block_id)
            if not owned:
                del self._agent_block_ids[agent_id]
            self._layer_num_blocks[layer_id] -= 1
            block.reset()
            self._free_block_ids.append(block.block_id)
        return groups

    def _notify_freed(self, groups: dict[tuple[str, int], list[int]]) -> None:
        for (agent_id, layer_id), block_ids in groups.items():
            self._notify("free", agent_id, layer_id, block_ids)

    def _notify(self, kind: str, agent_id: str, layer_id: int, block_ids: list[int]) -> None:
        # Outside the lock and after the change; a failing observer must not
        # undo or leak an allocation the caller is about to receive.
        if self._on_change is None:
            return
        try:
            self._on_change(kind, agent_id, layer_id, block_ids)
        except Exception:
            logger.exception("BlockPool on_change observer failed on %s", kind)

    # -- reads -----------------------------------------------------------

    @property
    def total_blocks(self) -> int:
        return len(self._blocks)

    def free_blocks(self) -> int:
        with self._lock:
            return len(self._free_block_ids)

    def used_blocks(self) -> int:
        with self._lock:
            return self.total_blocks - len(self._free_block_ids)

    def used_bytes(self) -> int:
        return self.used_blocks() * self.spec.bytes_per_block

    def total_bytes(self) -> int:
        return self.total_blocks * self.spec.bytes_per_block

    def agent_block_count(self, agent_id: str) -> int:
        with self._lock:
            return len(self._agent_block_ids.get(agent_id, ()))

    def agent_ids(self) -> list[str]:
        """Agents owning at least one block."""
        with self._lock:
            return list(self._agent_block_ids)

    def agent_usage(self) -> dict[str, int]:
        with self._lock:
            return {agent: len(ids) for agent, ids in self._agent_block_ids.items()}

    def layer_usage(self) -> list[int]:
        """Used blocks per layer, indexed by layer id."""
        with self._lock:
            return list(self._layer_num_blocks)

    def owner_of(self, block_id: int) -> str | None:
        if not 0 <= block_id < self.total_blocks:
            raise ValueError(f"block_id {block_id} outside [0, {self.total_blocks})")
        with self._lock:
            return self._blocks[block_id].agent_id

    def snapshot(self) -> PoolSnapshot:
        """An immutable, consistent picture of the used blocks."""
        with self._lock:
            infos = tuple(
                BlockInfo(b.block_id, b.layer_id, b.agent_id, b.token_start, b.num_tokens)
                for b in self._blocks
                if not b.is_free
            )
        return PoolSnapshot(
            total_blocks=self.total_blocks,
            block_tokens=self.spec.block_tokens,
            bytes_per_block=self.spec.bytes_per_block,
            n_layers=self.spec.n_layers,
            layer_types=tuple(self.spec.layer_types),
            blocks=infos,
        )

    def check_invariants(self) -> None:
        """Assert the bookkeeping is self-consistent (for tests and debugging)."""
        with self._lock:
            free_ids = set(self._free_block_ids)
            assert len(free_ids) == len(self._free_block_ids), "duplicate id in free list"
            used = [b for b in self._blocks if not b.is_free]
            assert len(used) + len(free_ids) == self.total_blocks, "used + free != total"
            for block_id in free_ids:
                block = self._blocks[block_id]
                assert block.is_free and block.layer_id is None, f"free block {block_id} owned"
            owned: dict[str, set[int]] = {}
            layer_counts = [0] * self.spec.n_layers
            for block in used:
                assert block.layer_id is not None, f"block {block.block_id} has no layer"
                owned.setdefault(block.agent_id, set()).add(block.block_id)
                layer_counts[block.layer_id] += 1
            assert owned == self._agent_block_ids, "per-agent block ids out of sync"
            assert layer_counts == self._layer_num_blocks, "per-layer counts out of sync"
