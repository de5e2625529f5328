"""Which agents' contexts live in the pool and which are spilled to disk.

Under pool pressure, idle agents are spilled least recently used first (never one
with a request in flight); a spilled agent's next turn restores its blocks from the
spill file, or, when that file is unusable or holds another context than the agent's
token ids, re-prefills those ids. ``save_all`` writes every resident context to its
file when the engine closes, so a restart finds them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from pool import AgentBlocks, Block, BlockPool, PoolExhausted
from telemetry import Recorder
from telemetry.events import Eviction, Restore

from .block_writer import BlockWriter
from .kv_store import KVBlockStore
from .spill import SpillError, SpillStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    """How a spilled context came back: ``prefix`` token ids still to prefill
    (the whole context when its file was unusable, else none)."""

    prefix: list[int]


class Residency:
    def __init__(
        self,
        pool: BlockPool,
        store: KVBlockStore,
        writer: BlockWriter,
        spill: SpillStore,
        recorder: Recorder,
    ) -> None:
        self.pool = pool
        self.store = store
        self.writer = writer
        self.spill = spill
        self.recorder = recorder
        self.spilled: set[str] = set()
        self.last_used: dict[str, float] = {}

    def touch(self, agent_id: str) -> None:
        self.last_used[agent_id] = time.monotonic()

    def forget(self, agent_id: str) -> None:
        """The agent's context is gone for good (closed, or restarted with cache=None)."""
        self.spilled.discard(agent_id)
        self.last_used.pop(agent_id, None)
        self.forget_file(agent_id)

    def forget_file(self, agent_id: str) -> None:
        try:
            self.spill.discard(agent_id)
        except SpillError as exc:  # harmless: restore checks a file's token ids before using it
            logger.warning("%s", exc)

    # -- making room -----------------------------------------------------------

    def reserve(
        self,
        agent: AgentBlocks,
        reserved: dict[int, list[Block]],
        context_tokens: int,
        victims: Callable[[], Iterable[AgentBlocks]],
    ) -> bool:
        """Reserve blocks for ``context_tokens``, spilling idle agents if needed.

        Free blocks count cached ones, so those are reclaimed (oldest first) before anyone
        is spilled; ``victims()`` gives the agents that may go, in the order they should.
        """
        try:
            self.writer.reserve(agent, reserved, context_tokens)
            return True
        except PoolExhausted:
            needed = self.writer.num_blocks_needed(agent, reserved, context_tokens)
        for victim in victims():
            if self.pool.free_blocks() >= needed:
                break
            self.spill_agent(victim, reason=f"room for {agent.agent_id!r}")
        try:
            self.writer.reserve(agent, reserved, context_tokens)
            return True
        except PoolExhausted:
            return False

    def spill_agent(self, agent: AgentBlocks, *, reason: str) -> bool:
        """Write the agent's context to disk and give its blocks back to the pool."""
        blocks = agent.all_blocks()
        try:
            path = self.save(agent)
        except SpillError as exc:  # e.g. disk full: keep the agent resident, lose nothing
            logger.warning("could not spill agent %r: %s", agent.agent_id, exc)
            return False
        if path is None:
            return False
        agent.clear()
        self.pool.free(blocks, agent.agent_id)  # a block others share stays with them
        self.spilled.add(agent.agent_id)
        if self.recorder.enabled:
            self.recorder.publish(Eviction(agent_id=agent.agent_id, num_blocks=len(blocks),
                                           reason=f"spilled to {path} ({reason})"))
        return True

    def save(self, agent: AgentBlocks) -> Path | None:
        """Write the agent's context to its spill file, keeping its blocks; None when there is
        nothing to save or no exact copy can be made. Raises SpillError when writing fails."""
        if not agent.all_blocks() or len(agent.token_ids) != agent.total_tokens:
            return None  # nothing to spill, or a context we could not rebuild exactly
        layers = self.store.read_layers(agent)  # as stored: quantized blocks stay quantized
        path, _ = self.spill.save(agent.agent_id, agent.token_ids, layers)
        return path

    def save_all(self, agents: Collection[AgentBlocks]) -> dict[str, str]:
        """Save every resident context, least recently used first, so that under the disk
        budget the most recent ones are kept; returns agent id -> error for those not saved."""
        errors: dict[str, str] = {}
        for agent in sorted(agents, key=lambda a: self.last_used.get(a.agent_id, 0.0)):
            try:
                self.save(agent)
            except SpillError as exc:
                logger.warning("could not save agent %r: %s", agent.agent_id, exc)
                errors[agent.agent_id] = str(exc)
        return errors

    # -- coming back -------------------------------------------------------------

    def restore(
        self,
        agent: AgentBlocks,
        victims: Callable[[], Iterable[AgentBlocks]],
    ) -> Restored | None:
        """Bring a spilled agent's context back into blocks; None when the pool has no room yet."""
        tic = time.perf_counter()
        try:
            spilled = self.spill.load(agent.agent_id, expected=list(agent.token_ids))
        except SpillError as exc:
            return self._fall_back_to_prefill(agent, str(exc))
        reserved: dict[int, list[Block]] = {}
        total = len(spilled.token_ids)
        agent.total_tokens = 0  # its blocks are empty; the write below refills them all
        if not self.reserve(agent, reserved, total, victims):
            agent.total_tokens = total
            return None
        stats = self.writer.write_layers(agent, reserved, spilled.layers, total, spilled.token_ids)
        self.spilled.discard(agent.agent_id)
        self.forget_file(agent.agent_id)
        if self.recorder.enabled:
            self.recorder.publish(Restore(agent_id=agent.agent_id, num_blocks=stats.num_blocks,
                                          num_bytes=spilled.num_bytes, num_tokens=total, source="disk",
                                          ms=(time.perf_counter() - tic) * 1000))
        return Restored(prefix=[])

    def _fall_back_to_prefill(self, agent: AgentBlocks, error: str) -> Restored:
        logger.warning("re-prefilling agent %r: %s", agent.agent_id, error)
        prefix = list(agent.token_ids)
        agent.total_tokens, agent.token_ids = 0, []
        self.spilled.discard(agent.agent_id)
        self.forget_file(agent.agent_id)
        if self.recorder.enabled:
            self.recorder.publish(Restore(agent_id=agent.agent_id, num_blocks=0, num_bytes=0, ms=0.0,
                                          num_tokens=len(prefix), source="prefill", error=error))
        return Restored(prefix=prefix)
