"""EXP-006: time the engine's block gather (``_reconstruct_cache``) on Gemma 3 12B shapes.

Synthetic blocks, no weights: the spec is built directly, blocks are allocated per
layer as the seed's snippet does, filled with random K/V, and gathered ``runs``
times. A plain NumPy copy of the same number of bytes is timed in the same loop
(interleaved, so both see the same machine noise) as the physical bound, and
``mx.concatenate`` of the same blocks as the naive baseline.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np

from engine import BlockPoolBatchEngine
from pool import AgentBlocks, BlockPool

from .exp006_data import ContextResult, Exp006Result, SyntheticShape
from .exp006_report import write_artifacts
from .report import fmt, machine_info

AGENT_ID = "test_agent"
DEFAULT_CONTEXTS = (256, 1024, 4096, 8192, 16384, 32768)
DEFAULT_KV_BITS = (16, 8, 4)
SEED_CONTEXT = 8192  # the context the seed's thresholds are stated for

Progress = Callable[[str], None]


def build_agent_blocks(pool: BlockPool, context_tokens: int, agent_id: str = AGENT_ID) -> AgentBlocks:
    """The seed's snippet: allocate each layer's blocks and add them in token order.

    Global layers get ``ceil(C / block_tokens)`` blocks, sliding layers only their
    window's; token ranges are filled in so the result passes ``AgentBlocks.check``.
    """
    spec = pool.spec
    agent_blocks = AgentBlocks(agent_id=agent_id, total_tokens=context_tokens)
    for layer_id in range(spec.n_layers):
        kept = spec.tokens_kept(layer_id, context_tokens)
        n_blocks = spec.max_blocks_for_layer(layer_id, context_tokens)
        blocks = pool.allocate(n_blocks, layer_id, agent_id)
        for j, block in enumerate(blocks):
            block.token_start = context_tokens - kept + j * spec.block_tokens
            block.num_tokens = min(spec.block_tokens, kept - j * spec.block_tokens)
            agent_blocks.add_block(block)
    agent_blocks.check(spec)
    return agent_blocks


def gather_once(engine: BlockPoolBatchEngine, agent_blocks: AgentBlocks) -> float:
    """Milliseconds for one ``_reconstruct_cache`` with every key/value evaluated."""
    tic = time.perf_counter()
    caches = engine._reconstruct_cache(agent_blocks)
    mx.eval([array for cache in caches for array in (cache.keys, cache.values)])
    ms = (time.perf_counter() - tic) * 1000
    del caches
    return ms


def concat_once(engine: BlockPoolBatchEngine, agent_blocks: AgentBlocks) -> float:
    """Milliseconds for the naive gather: ``mx.concatenate`` of each layer's block views."""
    spec, store = engine.spec, engine.kv_store
    tic = time.perf_counter()
    out: list[mx.array] = []
    for layer_id in range(spec.n_layers):
        kept = spec.tokens_kept(layer_id, agent_blocks.total_tokens)
        views = [store.block_arrays(b.block_id) for b in agent_blocks.layer_blocks(layer_id)]
        for name in ("k", "v"):
            out.append(mx.concatenate([v[name] for v in views], axis=1)[None, :, :kept])
    mx.eval(out)
    ms = (time.perf_counter() - tic) * 1000
    del out
    return ms


class CopyBench:
    """A plain memory copy of ``num_bytes`` between two preallocated, touched buffers."""

    def __init__(self, num_bytes: int) -> None:
        self.src = np.empty(num_bytes, dtype=np.uint8)
        self.src.fill(1)
        self.dst = np.empty_like(self.src)
        self.dst.fill(0)  # touch every page, so no run pays first-use page faults

    def once(self) -> float:
        tic = time.perf_counter()
        np.copyto(self.dst, self.src)
        return (time.perf_counter() - tic) * 1000


def measure_context(
    shape: SyntheticShape, context_tokens: int, *, runs: int, concat_runs: int, warmup: int
) -> ContextResult:
    """Gather and copy ``runs`` times (interleaved), concatenate ``concat_runs`` times."""
    spec = shape.spec()
    pool = BlockPool(spec, spec.blocks_for_context(context_tokens))
    engine = BlockPoolBatchEngine(None, None, pool, spec)
    agent_blocks = build_agent_blocks(pool, context_tokens)
    engine.kv_store.fill_random([b.block_id for b in agent_blocks.all_blocks()])
    num_bytes = sum(
        2 * spec.n_kv_heads * spec.tokens_kept(i, context_tokens) * spec.head_dim * spec.itemsize
        for i in range(spec.n_layers)
    )
    result = ContextResult(context_tokens, agent_blocks.num_blocks(), num_bytes, spec.kv_format)
    result.warmup_gather_ms = [gather_once(engine, agent_blocks) for _ in range(warmup)]
    copier = CopyBench(num_bytes)
    for _ in range(runs):
        result.gather_ms.append(gather_once(engine, agent_blocks))
        result.copy_ms.append(copier.once())
    del copier
    result.concat_ms = [concat_once(engine, agent_blocks) for _ in range(concat_runs)]
    del engine, pool, agent_blocks
    gc.collect()
    mx.clear_cache()  # 32K is ~2.3 GiB of slab: give it back before the next size
    return result


def run_exp006(
    out_dir: Path,
    *,
    runs: int = 100,
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    shape: SyntheticShape | None = None,
    concat_runs: int = 5,
    warmup: int = 2,
    progress: Progress = print,
    kv_bits: Sequence[int] = (16,),
) -> Exp006Result:
    """Run EXP-006 over ``contexts`` for each of ``kv_bits``' block formats (the first gives
    the verdict) and write its artifacts into ``out_dir``."""
    shape = shape or SyntheticShape()
    spec = shape.spec()
    progress(
        f"EXP-006: {spec.n_layers} layers ({len(spec.global_layer_ids)} global, "
        f"{len(spec.sliding_layer_ids)} sliding), {spec.n_kv_heads} KV heads x {spec.head_dim}, "
        f"{spec.dtype}, {spec.kv_format} blocks of {spec.block_tokens} tokens; {runs} runs per context on {mx.default_device()}"
    )
    by_format: dict[str, list[ContextResult]] = {}
    for bits in dict.fromkeys(kv_bits):
        format_shape = replace(shape, kv_bits=bits)
        progress(f"  {format_shape.spec().kv_format} blocks ({format_shape.spec().bytes_per_block} bytes each):")
        results = by_format.setdefault(format_shape.spec().kv_format, [])
        for context_tokens in sorted(set(contexts)):
            result = measure_context(format_shape, context_tokens, runs=runs, concat_runs=concat_runs, warmup=warmup)
            progress(_progress_line(result))
            results.append(result)
    verdict_context = SEED_CONTEXT if SEED_CONTEXT in contexts else max(contexts)
    first = next(iter(by_format.values()))
    outcome = Exp006Result(shape, runs, first, verdict_context, machine_info(), by_format=by_format)
    outcome.artifacts = write_artifacts(outcome, out_dir)
    return outcome


def _progress_line(result: ContextResult) -> str:
    gather, copy = result.gather, result.copy
    return (
        f"  {result.context_tokens:>6} tokens  {result.num_blocks:>5} blocks  "
        f"{result.total_bytes / 2**20:8.1f} MiB  gather p50 {fmt(gather.p50):>8} ms  p95 {fmt(gather.p95):>8} ms  "
        f"copy p95 {fmt(copy.p95):>8} ms  ratio {fmt(result.copy_bound_ratio):>5}"
    )
