"""The server's block pool, kept from its telemetry stream: who holds which block of which layer.

Each ``/v1/events`` stream opens with a ``pool_snapshot``; ``blocks_allocated`` and
``blocks_freed`` keep it current. Owners are the server's conversation ids; those that
carry this TUI's replies are shown under the agent's own id (``name``), the others stay
as they are: other clients' conversations, without their text.
"""

from __future__ import annotations

from telemetry import BlocksAllocated, BlocksFreed, Event, PoolSnapshotEvent
from pool import BlockInfo, PoolSnapshot

EMPTY = PoolSnapshot(total_blocks=0, block_tokens=0, bytes_per_block=0, n_layers=0, layer_types=(), blocks=(),
                     kv_format="")


class PoolMirror:
    """The remote engine's ``engine.protocol.PoolSource``: a picture of the server's pool, not a pool
    (nothing is allocated here). Bookkeeping only: block id -> (layer id, owner); used by one
    thread (the owner thread)."""

    def __init__(self) -> None:
        self.base: PoolSnapshotEvent | None = None  # None until the server's first snapshot
        self._owners: dict[int, tuple[int, str]] = {}
        self._names: dict[str, str] = {}  # server conversation id -> this TUI's agent id

    def name(self, conversation: str, agent_id: str) -> None:
        """The server runs ``agent_id``'s turns in ``conversation``."""
        self._names[conversation] = agent_id

    def forget(self, agent_id: str) -> None:
        self._names = {conv: agent for conv, agent in self._names.items() if agent != agent_id}

    def apply(self, event: Event) -> None:
        match event:
            case PoolSnapshotEvent():
                self.base = event
                self._owners = {block_id: (layer_id, owner) for block_id, layer_id, owner in event.owners}
            case BlocksAllocated():
                for block_id in event.block_ids:
                    self._owners[block_id] = (event.layer_id, event.agent_id)
            case BlocksFreed():
                for block_id in event.block_ids:
                    self._owners.pop(block_id, None)

    def snapshot(self) -> PoolSnapshot:
        """The pool now, owners renamed to agent ids where known (empty before the first snapshot)."""
        base = self.base
        if base is None:
            return EMPTY
        blocks = tuple(BlockInfo(block_id, layer_id, self._names.get(owner, owner), None, 0)
                       for block_id, (layer_id, owner) in sorted(self._owners.items()))
        return PoolSnapshot(total_blocks=base.total_blocks, block_tokens=base.block_tokens,
                            bytes_per_block=base.bytes_per_block, n_layers=base.n_layers,
                            layer_types=base.layer_types, blocks=blocks,
                            kv_format=base.kv_format)  # "" from a server older than quantized blocks
