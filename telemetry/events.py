"""Typed, immutable telemetry events.

Every event is a frozen pydantic model with a ``kind`` discriminator and a
wall-clock ``ts`` (``time.time()``), so one JSON object per line round-trips
through ``parse_event`` without a side table of types.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

# Non-negative aliases keep a buggy caller from poisoning the stats windows.
Count = Annotated[int, Field(ge=0)]
Millis = Annotated[float, Field(ge=0.0)]


class _EventBase(BaseModel):
    # allow_inf_nan=False: JSON has no NaN/inf, so they could not round-trip.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    ts: float = Field(default_factory=time.time)


class _BlocksEvent(_EventBase):
    agent_id: str
    layer_id: Count
    count: Count
    block_ids: tuple[int, ...]

    @model_validator(mode="after")
    def _count_matches_ids(self) -> _BlocksEvent:
        if self.count != len(self.block_ids):
            raise ValueError(
                f"count={self.count} but {len(self.block_ids)} block_ids were given; "
                "pass count=len(block_ids)"
            )
        return self


class BlocksAllocated(_BlocksEvent):
    """An agent took ``count`` blocks of one layer from the pool."""

    kind: Literal["blocks_allocated"] = "blocks_allocated"


class BlocksFreed(_BlocksEvent):
    """An agent returned ``count`` blocks of one layer to the pool."""

    kind: Literal["blocks_freed"] = "blocks_freed"


class BlocksShared(_BlocksEvent):
    """An agent took a reference to ``count`` blocks others hold or the pool keeps cached
    (a prefix hit, a fork, a de-duplicated block): nothing allocated, nothing copied."""

    kind: Literal["blocks_shared"] = "blocks_shared"


class PrefixLookup(_EventBase):
    """A fresh context looked for its prompt's leading full blocks in the pool.

    ``reused_tokens`` of ``prompt_tokens`` came from shared (or cached) blocks and were not
    prefilled; ``num_cached_blocks`` of the ``num_blocks`` held were revived from the free queue.
    """

    kind: Literal["prefix_lookup"] = "prefix_lookup"
    agent_id: str
    prompt_tokens: Count
    reused_tokens: Count
    num_blocks: Count
    num_cached_blocks: Count = 0


class CopyOnWrite(_EventBase):
    """Shared blocks an agent was about to write were copied into private ones."""

    kind: Literal["copy_on_write"] = "copy_on_write"
    agent_id: str
    num_blocks: Count
    num_bytes: Count


class Fork(_EventBase):
    """``agent_id`` now holds every block of ``source_agent_id``'s context (``num_bytes`` copied: 0)."""

    kind: Literal["fork"] = "fork"
    source_agent_id: str
    agent_id: str
    num_blocks: Count
    num_tokens: Count
    num_bytes: Count = 0


class Gather(_EventBase):
    """Blocks were copied into mlx-lm caches for one agent (``hot``: its global layers came
    from the hot set, still materialised since its last turn; only sliding windows, if any,
    were copied, and ``num_bytes`` counts those)."""

    kind: Literal["gather"] = "gather"
    agent_id: str
    num_blocks: Count
    num_bytes: Count
    ms: Millis
    num_tokens: Count
    hot: bool = False


class Scatter(_EventBase):
    """New K/V of one agent were written back into its blocks."""

    kind: Literal["scatter"] = "scatter"
    agent_id: str
    num_blocks: Count
    num_bytes: Count
    ms: Millis
    num_tokens: Count


class EngineStep(_EventBase):
    """One batched forward pass; ``ts`` is stamped when the step ended."""

    kind: Literal["engine_step"] = "engine_step"
    batch_size: Count
    tokens_generated: Count
    prefill_tokens: Count
    ms: Millis
    queued: Count


class RequestSubmitted(_EventBase):
    kind: Literal["request_submitted"] = "request_submitted"
    uid: int
    agent_id: str
    prompt_tokens: Count
    cached_tokens: Count
    max_tokens: Count


class RequestFinished(_EventBase):
    """A request ended; ``ttft_ms``/``decode_tok_s`` are None when not measured."""

    kind: Literal["request_finished"] = "request_finished"
    uid: int
    agent_id: str
    prompt_tokens: Count
    cached_tokens: Count
    generated_tokens: Count
    ttft_ms: Millis | None
    decode_tok_s: Annotated[float, Field(ge=0.0)] | None
    finish_reason: str
    error: str | None = None


class PoolSnapshotEvent(_EventBase):
    """Whole-pool picture; ``owners`` is (block_id, layer_id, agent_id) per used block."""

    kind: Literal["pool_snapshot"] = "pool_snapshot"
    total_blocks: Count
    used_blocks: Count
    n_layers: Count
    block_tokens: Count
    bytes_per_block: Count
    layer_types: tuple[str, ...]
    owners: tuple[tuple[int, int, str], ...]
    # Sharing (defaults keep older logs readable): held blocks with >1 holder, the copies
    # sharing saves, free blocks still findable by hash; (block_id, holders) of shared ones.
    num_shared_blocks: Count = 0
    num_saved_blocks: Count = 0
    num_cached_blocks: Count = 0
    shared: tuple[tuple[int, int], ...] = ()
    cached_block_ids: tuple[int, ...] = ()
    kv_format: str = ""  # ModelCacheSpec.kv_format; empty in logs from before quantized blocks

    @model_validator(mode="after")
    def _used_fits(self) -> PoolSnapshotEvent:
        if self.used_blocks > self.total_blocks:
            raise ValueError(
                f"used_blocks={self.used_blocks} exceeds total_blocks={self.total_blocks}"
            )
        return self


class Eviction(_EventBase):
    """Blocks of an agent left the pool (e.g. spilled to disk)."""

    kind: Literal["eviction"] = "eviction"
    agent_id: str
    num_blocks: Count
    reason: str


class Preemption(_EventBase):
    """A running reply was paused to give its blocks to an older one (vLLM's preemption): its
    K/V waits outside the pool (``recompute=False``) or is recomputed when it resumes."""

    kind: Literal["preemption"] = "preemption"
    uid: int
    agent_id: str
    generated_tokens: Count
    num_blocks: Count
    recompute: bool = False


class Restore(_EventBase):
    """A spilled agent's context came back into blocks: from its spill file
    (``source="disk"``), or, when that file was unusable, by re-prefilling its tokens."""

    kind: Literal["restore"] = "restore"
    agent_id: str
    num_blocks: Count
    num_bytes: Count
    ms: Millis
    num_tokens: Count
    source: Literal["disk", "prefill"]
    error: str | None = None


Event = Annotated[
    BlocksAllocated
    | BlocksFreed
    | BlocksShared
    | PrefixLookup
    | CopyOnWrite
    | Fork
    | Gather
    | Scatter
    | EngineStep
    | RequestSubmitted
    | RequestFinished
    | PoolSnapshotEvent
    | Eviction
    | Preemption
    | Restore,
    Field(discriminator="kind"),
]

EVENT_TYPES: tuple[type[_EventBase], ...] = (
    BlocksAllocated,
    BlocksFreed,
    BlocksShared,
    PrefixLookup,
    CopyOnWrite,
    Fork,
    Gather,
    Scatter,
    EngineStep,
    RequestSubmitted,
    RequestFinished,
    PoolSnapshotEvent,
    Eviction,
    Preemption,
    Restore,
)
EVENT_KINDS: frozenset[str] = frozenset(
    t.model_fields["kind"].default for t in EVENT_TYPES
)

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(obj: dict[str, Any] | str | bytes) -> Event:
    """Build the right event class from a dict or a JSON string.

    Raises pydantic's ``ValidationError`` (a ``ValueError``) for unknown kinds
    or bad fields.
    """
    if isinstance(obj, (str, bytes)):
        return _EVENT_ADAPTER.validate_json(obj)
    return _EVENT_ADAPTER.validate_python(obj)
