"""Events are immutable, validated, and parse back to the right class by ``kind``."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from telemetry import (
    EVENT_KINDS,
    EVENT_TYPES,
    BlocksAllocated,
    BlocksFreed,
    BlocksShared,
    CopyOnWrite,
    EngineStep,
    Fork,
    Preemption,
    PrefixLookup,
    Eviction,
    Restore,
    Gather,
    PoolSnapshotEvent,
    RequestFinished,
    RequestSubmitted,
    Scatter,
    parse_event,
)

ONE_OF_EACH = [
    BlocksAllocated(agent_id="a", layer_id=0, count=2, block_ids=(4, 5)),
    BlocksFreed(agent_id="a", layer_id=0, count=1, block_ids=(4,)),
    Gather(agent_id="a", num_blocks=3, num_bytes=3 * 4096, ms=0.42, num_tokens=40),
    Scatter(agent_id="b", num_blocks=1, num_bytes=4096, ms=0.05, num_tokens=1),
    EngineStep(batch_size=2, tokens_generated=2, prefill_tokens=0, ms=12.5, queued=1),
    RequestSubmitted(uid=7, agent_id="a", prompt_tokens=30, cached_tokens=16, max_tokens=64),
    RequestFinished(
        uid=7,
        agent_id="a",
        prompt_tokens=30,
        cached_tokens=16,
        generated_tokens=64,
        ttft_ms=35.0,
        decode_tok_s=80.5,
        finish_reason="length",
    ),
    RequestFinished(
        uid=8,
        agent_id="b",
        prompt_tokens=3,
        cached_tokens=0,
        generated_tokens=0,
        ttft_ms=None,
        decode_tok_s=None,
        finish_reason="error",
        error="boom",
    ),
    PoolSnapshotEvent(
        total_blocks=8,
        used_blocks=2,
        n_layers=2,
        block_tokens=16,
        bytes_per_block=4096,
        layer_types=("full", "sliding"),
        owners=((4, 0, "a"), (5, 1, "a")),
    ),
    Eviction(agent_id="b", num_blocks=2, reason="spill"),
    Preemption(uid=9, agent_id="b", generated_tokens=12, num_blocks=4),
    Restore(agent_id="b", num_blocks=2, num_bytes=4096, ms=1.5, num_tokens=300, source="disk"),
    BlocksShared(agent_id="c", layer_id=1, count=2, block_ids=(4, 5)),
    PrefixLookup(agent_id="c", prompt_tokens=300, reused_tokens=256, num_blocks=2, num_cached_blocks=1),
    CopyOnWrite(agent_id="c", num_blocks=1, num_bytes=4096),
    Fork(source_agent_id="a", agent_id="c", num_blocks=2, num_tokens=40),
]


def test_one_of_each_covers_every_kind() -> None:
    assert {e.kind for e in ONE_OF_EACH} == EVENT_KINDS
    assert len(EVENT_TYPES) == len(EVENT_KINDS)


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.kind)
def test_json_and_dict_round_trip(event) -> None:
    assert parse_event(event.model_dump_json()) == event
    assert parse_event(event.model_dump()) == event
    assert type(parse_event(event.model_dump(mode="json"))) is type(event)


def test_events_are_frozen() -> None:
    event = ONE_OF_EACH[2]
    with pytest.raises(ValidationError):
        event.ms = 1.0  # type: ignore[misc]


def test_ts_defaults_to_now() -> None:
    before = time.time()
    event = Eviction(agent_id="a", num_blocks=1, reason="spill")
    assert before <= event.ts <= time.time()


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "nope", "agent_id": "a"},
        {"kind": "gather", "agent_id": "a"},  # missing fields
        {"kind": "gather", "agent_id": "a", "num_blocks": 1, "num_bytes": 1, "ms": -1.0,
         "num_tokens": 1},
        {"kind": "eviction", "agent_id": "a", "num_blocks": 1, "reason": "x", "extra": 1},
    ],
)
def test_parse_event_rejects_bad_input_with_value_error(bad: dict) -> None:
    with pytest.raises(ValueError):
        parse_event(bad)


def test_parse_event_rejects_bad_json() -> None:
    with pytest.raises(ValueError):
        parse_event('{"kind": "gather", ')


def test_non_finite_times_are_rejected() -> None:
    with pytest.raises(ValidationError, match="finite"):
        EngineStep(batch_size=1, tokens_generated=1, prefill_tokens=0, ms=float("inf"), queued=0)


def test_block_count_must_match_block_ids() -> None:
    with pytest.raises(ValidationError, match="count=3 but 2 block_ids"):
        BlocksAllocated(agent_id="a", layer_id=0, count=3, block_ids=(1, 2))


def test_pool_snapshot_used_cannot_exceed_total() -> None:
    with pytest.raises(ValidationError, match="used_blocks=9 exceeds total_blocks=8"):
        PoolSnapshotEvent(
            total_blocks=8,
            used_blocks=9,
            n_layers=1,
            block_tokens=16,
            bytes_per_block=1,
            layer_types=("full",),
            owners=(),
        )


def test_sharing_stats_add_up_lookups_copies_and_forks() -> None:
    from telemetry import Recorder

    recorder = Recorder()
    recorder.publish(PrefixLookup(agent_id="a", prompt_tokens=300, reused_tokens=0, num_blocks=0))
    recorder.publish(PrefixLookup(agent_id="b", prompt_tokens=300, reused_tokens=256, num_blocks=4))
    recorder.publish(CopyOnWrite(agent_id="b", num_blocks=2, num_bytes=8192))
    recorder.publish(Fork(source_agent_id="b", agent_id="c", num_blocks=6, num_tokens=300))
    sharing = recorder.state().sharing
    assert (sharing.num_lookups, sharing.num_hits, sharing.reused_tokens) == (2, 1, 256)
    assert sharing.hit_rate == pytest.approx(256 / 600)
    assert (sharing.cow_blocks, sharing.cow_bytes, sharing.forks) == (2, 8192, 1)
