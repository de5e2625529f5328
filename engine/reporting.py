"""A finished request as the caller sees it (``Completion``) and as telemetry records it."""

from __future__ import annotations

import time

from pool import AgentBlocks, BlockPool
from telemetry import Recorder
from telemetry.events import BlocksAllocated, BlocksFreed, BlocksShared, PoolSnapshotEvent, RequestFinished

from .outputs import Completion, FinishReason
from .sequence import Request


def report_completion(
    recorder: Recorder, pool: BlockPool, request: Request, reason: FinishReason, agent: AgentBlocks,
    error: str | None,
) -> Completion:
    """The request's Completion (``agent``: its context after the turn), published when recording."""
    now = time.perf_counter()
    ttft = None if request.first_token_s is None else request.first_token_s - request.submitted_s
    completion = Completion(
        uid=request.uid,
        agent_id=request.agent_id,
        text=request.text,
        token_count=request.reused_tokens + len(request.prefill_ids) + len(request.generated_ids),
        finish_reason=reason,
        blocks=agent,
        prompt_tokens=len(request.prefill_ids),
        cached_tokens=request.cached_tokens,
        generated_tokens=len(request.generated_ids),
        token_ids=list(request.generated_ids),
        error=error,
        ttft_s=ttft,
        elapsed_s=now - request.submitted_s,
    )
    if recorder.enabled:
        recorder.publish(RequestFinished(
            uid=request.uid, agent_id=request.agent_id, prompt_tokens=completion.prompt_tokens,
            cached_tokens=completion.cached_tokens, generated_tokens=completion.generated_tokens,
            ttft_ms=None if ttft is None else ttft * 1000, decode_tok_s=completion.decode_tok_s,
            finish_reason=reason, error=error))
        recorder.publish(pool_snapshot_event(pool))
    return completion


def publish_pool_change(recorder: Recorder, kind: str, agent_id: str, layer_id: int, block_ids: list[int]) -> None:
    """The pool's observer: one event per allocate, share or free."""
    event = {"allocate": BlocksAllocated, "share": BlocksShared}.get(kind, BlocksFreed)
    recorder.publish(event(agent_id=agent_id, layer_id=layer_id, count=len(block_ids), block_ids=tuple(block_ids)))


def pool_snapshot_event(pool: BlockPool) -> PoolSnapshotEvent:
    snap = pool.snapshot()
    return PoolSnapshotEvent(
        total_blocks=snap.total_blocks, used_blocks=snap.used_blocks(), n_layers=snap.n_layers,
        block_tokens=snap.block_tokens, bytes_per_block=snap.bytes_per_block, kv_format=snap.kv_format,
        layer_types=tuple(snap.layer_types),
        owners=tuple((b.block_id, b.layer_id, b.agent_id) for b in snap.blocks),
        num_shared_blocks=snap.num_shared_blocks(), num_saved_blocks=snap.num_saved_blocks(),
        num_cached_blocks=snap.num_cached_blocks(),
        shared=tuple((b.block_id, b.ref_count) for b in snap.blocks if b.is_shared),
        cached_block_ids=tuple(b.block_id for b in snap.cached_blocks),
    )
