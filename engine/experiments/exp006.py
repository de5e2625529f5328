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
from dataclasses import replace
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from engine import BlockPoolBatchEngine
from pool import AgentBlocks, BlockPool, ModelCacheSpec
from telemetry import LatencyStats, latency_stats

from .exp006_report import write_artifacts
from .report import fmt, machine_info

AGENT_ID = "test_agent"
DEFAULT_CONTEXTS = (256, 1024, 4096, 8192, 16384, 32768)
DEFAULT_KV_BITS = (16, 8, 4)
SEED_CONTEXT = 8192  # the context the seed's thresholds are stated for

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SyntheticShape:
    """KV geometry of the synthetic model; the defaults are Gemma 3 12B's."""

    n_layers: int = 48
    n_kv_heads: int = 8
    head_dim: int = 256
    block_tokens: int = 256
    sliding_window: int = 1024
    global_every: int = 6  # layer i is global when i % global_every == global_every - 1
    dtype: str = "float16"
    kv_bits: int = 16  # 8 / 4: blocks quantized, gathers dequantize into float16 caches

    def spec(self) -> ModelCacheSpec:
        layer_types = tuple(
            "global" if i % self.global_every == self.global_every - 1 else "sliding"
            for i in range(self.n_layers)
        )
        has_sliding = "sliding" in layer_types
        return ModelCacheSpec(
            n_layers=self.n_layers,
            n_kv_heads=self.n_kv_heads,
            head_dim=self.head_dim,
            dtype=self.dtype,
            block_tokens=self.block_tokens,
            layer_types=layer_types,
            sliding_window=self.sliding_window if has_sliding else None,
            kv_bits=self.kv_bits,
        )


@dataclass
class ContextResult:
    """Every sample taken for one context size."""

    context_tokens: int
    num_blocks: int
    total_bytes: int  # of the gathered float caches: what the plain copy moves
    kv_format: str = "float16"
    gather_ms: list[float] = field(default_factory=list)
    copy_ms: list[float] = field(default_factory=list)
    concat_ms: list[float] = field(default_factory=list)
    warmup_gather_ms: list[float] = field(default_factory=list)

    @property
    def gather(self) -> LatencyStats:
        return latency_stats(self.gather_ms)

    @property
    def copy(self) -> LatencyStats:
        return latency_stats(self.copy_ms)

    @property
    def concat(self) -> LatencyStats:
        return latency_stats(self.concat_ms)

    @property
    def copy_bound_ratio(self) -> float | None:
        """p95(gather) / p95(copy): 1.0 means the gather runs at memory-copy speed."""
        gather, copy = self.gather.p95, self.copy.p95
        return None if gather is None or not copy else gather / copy

    def to_json(self) -> dict[str, object]:
        return {
            "context_tokens": self.context_tokens,
            "kv_format": self.kv_format,
            "num_blocks": self.num_blocks,
            "total_bytes": self.total_bytes,
            "gather_ms": self.gather_ms,
            "copy_ms": self.copy_ms,
            "concat_ms": self.concat_ms,
            "warmup_gather_ms": self.warmup_gather_ms,
        }


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


@dataclass
class Exp006Result:
    """``contexts``: the first KV format's (the verdict's); ``by_format``: every format's, in order."""

    shape: SyntheticShape
    runs: int
    contexts: list[ContextResult]
    verdict_context: int
    machine: dict[str, object]
    artifacts: list[Path] = field(default_factory=list)
    by_format: dict[str, list[ContextResult]] = field(default_factory=dict)

    @property
    def headline(self) -> ContextResult:
        return next(c for c in self.contexts if c.context_tokens == self.verdict_context)


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
