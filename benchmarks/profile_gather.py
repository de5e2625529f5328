"""Where EXP-006's gather time goes, and what a variant of it would cost (same run).

For each context on Gemma 3 12B shapes it times, interleaved:
  engine    the engine's real ``_reconstruct_cache`` (+ ``mx.eval`` of every key/value);
  views     the same ``mx.take`` over the slab's (block, K|V, head) rows, keys/values taken
            as ``kv[0:1]``/``kv[1:2]`` slices instead of integer indices (on an evaluated
            array ``kv[0]`` copies in MLX; measured here, it costs nothing after a take);
  copy      ``np.copyto`` of the same bytes between preallocated buffers (the bound);
first under the engine's MLX allocator cache limit (1 GiB), then with ``--cache-limit-gib``:
a gather larger than the cache limit maps fresh memory, and pays its page faults, every time.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import mlx.core as mx
import numpy as np

from common import print_table, save
from engine import BlockPoolBatchEngine
from lab.exp006 import CopyBench, SyntheticShape, build_agent_blocks, gather_once
from lab.report import fmt
from pool import AgentBlocks, BlockPool, ModelCacheSpec


def take_indices(spec: ModelCacheSpec, agent: AgentBlocks) -> list[mx.array]:
    """Per layer, slab rows (block, K|V, head) in the order (K|V, head, block)."""
    h = spec.n_kv_heads
    return [mx.array([(b.block_id * 2 + kv) * h + head for kv in range(2) for head in range(h)
                      for b in agent.layer_blocks(i)], dtype=mx.uint32) for i in range(spec.n_layers)]


def views_once(engine: BlockPoolBatchEngine, agent: AgentBlocks, indices: list[mx.array]) -> float:
    """One ``mx.take`` per layer; keys and values as slice views of its result."""
    spec, store = engine.spec, engine.kv_store
    rows = store.rows
    tic = time.perf_counter()
    caches = []
    for i, idx in enumerate(indices):
        kv = mx.take(rows, idx, axis=0).reshape(2, spec.n_kv_heads, -1, spec.head_dim)
        kept = spec.tokens_kept(i, agent.total_tokens)
        caches.append(store.make_cache(i, kv[0:1, :, :kept], kv[1:2, :, :kept], agent.total_tokens))
    mx.eval([a for c in caches for a in (c.keys, c.values)])
    ms = (time.perf_counter() - tic) * 1000
    del caches
    return ms


def profile(context: int, runs: int) -> dict[str, list[float]]:
    spec = SyntheticShape().spec()
    pool = BlockPool(spec, spec.blocks_for_context(context))
    engine = BlockPoolBatchEngine(None, None, pool, spec)
    agent = build_agent_blocks(pool, context)
    engine.kv_store.fill_random([b.block_id for b in agent.all_blocks()])
    indices = take_indices(spec, agent)
    copier = CopyBench(sum(2 * spec.n_kv_heads * spec.tokens_kept(i, context) * spec.head_dim * spec.itemsize
                           for i in range(spec.n_layers)))
    timers: dict[str, Callable[[], float]] = {
        "engine": lambda: gather_once(engine, agent), "views": lambda: views_once(engine, agent, indices),
        "copy": copier.once}
    for timer in timers.values():
        timer()  # warm-up: first-use page faults
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(runs):
        for name, timer in timers.items():
            samples[name].append(timer())
    del engine, pool, agent, copier
    gc.collect()
    mx.clear_cache()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", default="8192,32768")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cache-limit-gib", type=float, default=6.0)
    args = parser.parse_args()
    rows, data = [], []
    for limit in (None, args.cache_limit_gib):
        for context in (int(c) for c in args.contexts.split(",")):
            if limit is not None:
                mx.set_cache_limit(int(limit * 2**30))  # the engine only raises it to 1 GiB itself
            samples = profile(context, args.runs)
            med = {k: statistics.median(v) for k, v in samples.items()}
            label = "engine default (1 GiB)" if limit is None else f"{limit:g} GiB"
            rows.append((context, label, *(fmt(med[k]) for k in ("engine", "views", "copy")),
                         *(fmt(med[k] / med["copy"]) for k in ("engine", "views"))))
            data.append({"context_tokens": context, "cache_limit": label, "samples_ms": samples, "median_ms": med})
            print(rows[-1], flush=True)
    print_table(f"gather profile, medians of {args.runs} interleaved runs (ms)",
                ("context", "MLX cache limit", "engine", "views", "np copy", "engine/copy", "views/copy"), rows)
    save("profile_gather", None, params=vars(args),
         headline={"metric": "median ms: engine gather vs slice-view variant vs plain copy", "value": None},
         data=data)


if __name__ == "__main__":
    main()
