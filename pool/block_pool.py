"""A fixed set of KV blocks, each held by one or more (agent, layer) holders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from pool import sharing, truncation
from pool.agent_blocks import AgentBlocks
from pool.block import Block
from pool.errors import PoolExhausted
from pool.pool_state import PoolState, check_agent_id
from pool.prefix_index import PrefixMatch
from pool.sharing import RegisterStats
from pool.spec import ModelCacheSpec

logger = logging.getLogger(__name__)

# on_change(kind, agent_id, layer_id, block_ids); kind: "allocate", "share" (a reference taken) or "free".
ChangeObserver = Callable[[str, str, int, list[int]], None]


class BlockPool(PoolState):
    """Ids, holders, counts and content hashes of `total_blocks` blocks; no tensors.

    A block is held by every agent whose context uses it (its reference count
    is its number of holders) and goes back to the free queue when the last one
    lets go. A full block with a hash stays findable there (cached) until the
    pool reuses it; cached blocks count as free. Every public method takes one
    re-entrant lock; allocation is all-or-nothing.
    """

    def __init__(
        self,
        spec: ModelCacheSpec,
        total_blocks: int,
        *,
        model_key: str = "",
        on_change: ChangeObserver | None = None,
    ) -> None:
        super().__init__(spec, total_blocks, model_key=model_key)
        self._on_change = on_change
        self._depth = 0
        self._events: list[tuple[str, str, int, list[int]]] = []

    @classmethod
    def from_memory_budget(
        cls,
        spec: ModelCacheSpec,
        budget_bytes: int,
        *,
        model_key: str = "",
        on_change: ChangeObserver | None = None,
    ) -> BlockPool:
        """As many blocks as fit in `budget_bytes`."""
        total_blocks = budget_bytes // spec.bytes_per_block
        if total_blocks < 1:
            raise ValueError(
                f"budget of {budget_bytes} bytes holds no block; "
                f"one block needs {spec.bytes_per_block} bytes"
            )
        return cls(spec, total_blocks, model_key=model_key, on_change=on_change)

    # -- allocate and free -------------------------------------------------

    def set_observer(self, on_change: ChangeObserver | None) -> None:
        """Replace the change observer (the engine hooks its telemetry here)."""
        self._on_change = on_change

    def can_allocate(self, n_blocks: int) -> bool:
        """Whether `n_blocks` fresh blocks are free (cached ones count: they are reclaimed)."""
        with self._lock:
            return n_blocks <= len(self._free)

    def allocate(self, n_blocks: int, layer_id: int, agent_id: str) -> list[Block]:
        """Give `agent_id` `n_blocks` empty, private blocks for `layer_id`, or raise."""
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        if not 0 <= layer_id < self.spec.n_layers:
            raise ValueError(f"layer_id {layer_id} outside [0, {self.spec.n_layers})")
        check_agent_id(agent_id)
        with self._action():
            if not self.can_allocate(n_blocks):
                raise PoolExhausted(n_blocks, len(self._free), self.total_blocks)
            blocks = [self._take_free() for _ in range(n_blocks)]
            for block in blocks:
                block.layer_id, block.holder_ids = layer_id, (agent_id,)
            block_ids = [b.block_id for b in blocks]
            self._agent_block_ids.setdefault(agent_id, set()).update(block_ids)
            self._layer_num_blocks[layer_id] += n_blocks
            self._notify("allocate", agent_id, layer_id, block_ids)
        return blocks

    def free(self, blocks: Iterable[Block], agent_id: str | None = None) -> int:
        """Drop `agent_id`'s reference to each block; all are validated before any is dropped.

        Without `agent_id` every block must have exactly one holder, whose
        reference is dropped. A block goes back to the free queue at zero holders.
        """
        blocks = list(blocks)
        with self._action():
            self._check_blocks(blocks)
            holder_ids = [self._holder_to_drop(block, agent_id) for block in blocks]
            self._release(list(zip(blocks, holder_ids)))
        return len(blocks)

    def free_agent_blocks(self, agent_id: str) -> int:
        """Drop every reference `agent_id` holds; returns how many (0 if none)."""
        with self._action():
            held_ids = sorted(self._agent_block_ids.get(agent_id, ()))
            self._release([(self._blocks[i], agent_id) for i in held_ids])
        return len(held_ids)

    def hold(self, blocks: Iterable[Block], agent_id: str) -> int:
        """Make `agent_id` a further holder of held or cached blocks (nothing is copied)."""
        blocks = list(blocks)
        check_agent_id(agent_id)
        with self._action():
            self._check_blocks(blocks)
            for block in blocks:
                if block.is_free and block.block_hash is None:
                    raise ValueError(f"block {block.block_id} is free and empty: nothing to share")
                if agent_id in block.holder_ids:
                    raise ValueError(f"agent {agent_id!r} already holds block {block.block_id}")
            groups: dict[int, list[int]] = {}
            for block in blocks:
                assert block.layer_id is not None, f"shareable block {block.block_id} has no layer"
                if block.is_free:
                    self._free.take_cached(block.block_id)
                    self._layer_num_blocks[block.layer_id] += 1
                block.holder_ids += (agent_id,)
                self._agent_block_ids.setdefault(agent_id, set()).add(block.block_id)
                groups.setdefault(block.layer_id, []).append(block.block_id)
            for layer_id, block_ids in groups.items():
                self._notify("share", agent_id, layer_id, block_ids)
        return len(blocks)

    # -- hashes -------------------------------------------------------------

    def register_hash(self, block: Block, block_hash: int) -> Block:
        """Name a held, full, block-aligned block by its content hash, so others can find it.

        Returns the block that carries the hash: `block`, or an existing block
        with the same content in the same layer (the caller may switch to it).
        """
        with self._action():
            self._check_blocks([block])
            if block.is_free:
                raise ValueError(f"block {block.block_id} is free; only held blocks get a hash")
            if not block.is_full or block.token_start is None:
                raise ValueError(
                    f"block {block.block_id} holds {block.num_tokens}/{block.capacity} tokens; "
                    "only full blocks get a hash"
                )
            if block.token_start % self.spec.block_tokens:
                raise ValueError(
                    f"block {block.block_id} starts at token {block.token_start}, not a multiple "
                    f"of {self.spec.block_tokens}; only block-aligned ranges get a hash"
                )
            if block.block_hash is not None:
                if block.block_hash != block_hash:
                    raise ValueError(f"block {block.block_id} already has a different hash")
                return block
            assert block.layer_id is not None
            existing_id = self._index.find(block.layer_id, block_hash)
            if existing_id is not None:
                return self._blocks[existing_id]
            block.block_hash = block_hash
            self._index.add(block.layer_id, block_hash, block.block_id)
            return block

    def forget_hash(self, block: Block) -> None:
        """Drop a private block's hash before its holder overwrites it."""
        with self._action():
            self._check_blocks([block])
            if block.ref_count != 1:
                raise ValueError(
                    f"block {block.block_id} has {block.ref_count} holders; only a private "
                    "block's hash may be dropped (copy a shared one first)"
                )
            if block.block_hash is not None:
                assert block.layer_id is not None
                self._index.remove(block.layer_id, block.block_hash, block.block_id)
                block.block_hash = None

    def reclaim_cached_blocks(self, n_blocks: int | None = None) -> int:
        """Forget the hashes of up to `n_blocks` cached blocks (all if None), oldest first."""
        with self._action():
            count = self._free.num_cached if n_blocks is None else min(n_blocks, self._free.num_cached)
            for _ in range(count):
                block = self._blocks[self._free.pop_cached()]
                self._unindex(block)
                block.reset()
                self._free.push_empty(block.block_id)
        return count

    # -- whole contexts (see pool/sharing.py) -------------------------------

    def fork(self, source: AgentBlocks, new_agent_id: str) -> AgentBlocks:
        """A new agent holding every block of `source` (references +1, nothing copied)."""
        with self._action():
            return sharing.fork(self, source, new_agent_id)

    def truncate(self, agent: AgentBlocks, n_tokens: int) -> list[tuple[int, int]]:
        """Keep `agent`'s first `n_tokens` (``pool.truncation``); (old_id, new_id) of each block copied."""
        with self._action():
            return truncation.truncate(self, agent, n_tokens)

    def acquire_prefix(self, agent_id: str, match: PrefixMatch) -> AgentBlocks:
        """A new context for `agent_id` that holds the blocks of `match`."""
        with self._action():
            return sharing.acquire_prefix(self, agent_id, match)

    def copy_on_write(
        self, agent: AgentBlocks, blocks: Iterable[Block] | None = None
    ) -> list[tuple[int, int]]:
        """Make `blocks` (default: each layer's partial last block) writable for `agent`.

        Returns (old_id, new_id) for every shared block swapped for a private
        copy: the engine copies their K/V. All or nothing: PoolExhausted otherwise.
        """
        with self._action():
            return sharing.copy_on_write(self, agent, blocks)

    def register_full_blocks(
        self, agent: AgentBlocks, layer_ids: Iterable[int] | None = None
    ) -> RegisterStats:
        """Hash `agent`'s full, unhashed blocks after their K/V is written."""
        with self._action():
            return sharing.register_full_blocks(self, agent, layer_ids)

    # -- internals ------------------------------------------------------------

    @contextmanager
    def _action(self) -> Iterator[None]:
        # Observers run after the outermost action, outside the lock: none undoes or blocks a change.
        events: list[tuple[str, str, int, list[int]]] = []
        try:
            with self._lock:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                    if self._depth == 0:
                        events, self._events = self._events, []
        finally:
            for event in events:
                self._call_observer(*event)

    def _take_free(self) -> Block:
        block_id, was_cached = self._free.pop()
        block = self._blocks[block_id]
        if was_cached:
            self._unindex(block)
            block.reset()
        assert block.is_free and block.layer_id is None, f"block {block_id} on free list but used"
        return block

    def _unindex(self, block: Block) -> None:
        assert block.layer_id is not None and block.block_hash is not None
        self._index.remove(block.layer_id, block.block_hash, block.block_id)

    def _release(self, drops: list[tuple[Block, str]]) -> None:
        """Drop validated references; blocks left without holders go to the free queue."""
        groups: dict[tuple[str, int], list[int]] = {}
        newly_cached: list[Block] = []
        for block, agent_id in drops:
            assert block.layer_id is not None
            groups.setdefault((agent_id, block.layer_id), []).append(block.block_id)
            block.holder_ids = tuple(h for h in block.holder_ids if h != agent_id)
            held = self._agent_block_ids[agent_id]
            held.remove(block.block_id)
            if not held:
                del self._agent_block_ids[agent_id]
            if block.is_free:
                self._layer_num_blocks[block.layer_id] -= 1
                if block.block_hash is None:
                    block.reset()
                    self._free.push_empty(block.block_id)
                else:
                    newly_cached.append(block)
        # A prefix's later blocks are reclaimed first: without its first blocks
        # the rest of a chain can never be found.
        for block in sorted(newly_cached, key=lambda b: -(b.token_start or 0)):
            self._free.push_cached(block.block_id)
        for (agent_id, layer_id), block_ids in groups.items():
            self._notify("free", agent_id, layer_id, block_ids)

    def _notify(self, kind: str, agent_id: str, layer_id: int, block_ids: list[int]) -> None:
        self._events.append((kind, agent_id, layer_id, block_ids))

    def _call_observer(self, kind: str, agent_id: str, layer_id: int, block_ids: list[int]) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(kind, agent_id, layer_id, block_ids)
        except Exception:
            logger.exception("BlockPool on_change observer failed on %s", kind)
