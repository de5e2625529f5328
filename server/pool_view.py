"""What ``GET /v1/pool`` answers: who holds which block of which layer, read on the owner thread."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Literal, cast

from pydantic import BaseModel

from engine.owner_thread import EngineOwner
from engine.reporting import pool_snapshot_event
from telemetry import PoolSnapshotEvent

if TYPE_CHECKING:
    from engine.batch_engine import BlockPoolBatchEngine

AgentState = Literal["running", "idle", "spilled", "closing"]


class AgentView(BaseModel):
    agent_id: str
    state: AgentState
    blocks: int
    context_tokens: int


class PoolView(BaseModel):
    """The pool at one instant. ``blocks`` rows are ``[block_id, layer_id, agent_id, token_start, num_tokens]``."""

    total_blocks: int
    used_blocks: int
    free_blocks: int
    reserved_blocks: int
    block_tokens: int
    bytes_per_block: int
    kv_format: str  # how blocks hold K/V: the model's float dtype, or q8/g64, q4/g64 ...
    n_layers: int
    layer_types: list[str]
    agents: list[AgentView]
    blocks: list[tuple[int, int, str, int | None, int]]


def pool_view(owner: EngineOwner) -> PoolView:
    """Run by the owner thread between steps (``Inspect``)."""
    engine = cast("BlockPoolBatchEngine", owner.engine)
    snap = engine.pool.snapshot()
    held = Counter(info.agent_id for info in snap.blocks)
    running = owner.requests.running_agent_ids()
    idle = set(owner.requests.conversations.idle_agents())
    spilled = engine.spilled_agents()
    agents = []
    for agent_id in sorted(running | idle | spilled | set(held)):
        blocks = engine.agent_blocks(agent_id)
        agents.append(AgentView(agent_id=agent_id, state=_state(agent_id, running, idle, spilled),
                                blocks=held.get(agent_id, 0),
                                context_tokens=blocks.total_tokens if blocks is not None else 0))
    return PoolView(
        total_blocks=snap.total_blocks, used_blocks=snap.used_blocks(), free_blocks=snap.free_blocks(),
        reserved_blocks=engine.reserved_blocks(), block_tokens=snap.block_tokens,
        bytes_per_block=snap.bytes_per_block, kv_format=snap.kv_format, n_layers=snap.n_layers, layer_types=list(snap.layer_types),
        agents=agents,
        blocks=[(b.block_id, b.layer_id, b.agent_id, b.token_start, b.num_tokens) for b in snap.blocks],
    )


def _state(agent_id: str, running: set[str], idle: set[str], spilled: set[str]) -> AgentState:
    if agent_id in running:
        return "running"
    if agent_id in spilled:
        return "spilled"
    return "idle" if agent_id in idle else "closing"


def pool_event(owner: EngineOwner) -> PoolSnapshotEvent:
    """A ``pool_snapshot`` telemetry event of now: the first message of each /v1/events stream."""
    engine = cast("BlockPoolBatchEngine", owner.engine)
    return pool_snapshot_event(engine.pool)
