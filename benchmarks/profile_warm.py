"""Where a warm turn's time goes, phase by phase, for the first warm turn of a context and later ones.

A cold turn on a ~2,000-token history, then warm turns of 18 tokens (``max_tokens=1``), each
phase timed by wrapping the function that does it (wall time; phases nest inside ``step``):
  open        Contexts.open: the context (prefix lookup for a fresh one)
  materialize Contexts.materialize: hot-set hit, or gather from blocks
  one pass    ModelRunner.first_token: the turn read and its first token sampled, one forward
  merge       mlx-lm's _merge_caches: caches into a batch cache (a cold turn; a reply going on)
  prefill     PromptProcessingBatch.prompt: prompt tokens but the last (a cold turn)
  to-decode   PromptProcessingBatch.generate: the batch moves to decoding; its first decode step
  decode      GenerationBatch.next: a decode step of the batch
  feed        ModelRunner.feed: a turn ended by its first token puts that token's K/V in
  write-back  Contexts.write_back: the turn's tokens into blocks, the hot set kept
  encode      KVBlockStore.encode (in write-back): the new tokens' K/V to the block format
  write layers BlockWriter.write_layers (in write-back): their bytes into the slab
  ttft        submit to the step output that streams the first token (what a caller sees)
  total       submit to the turn's completion (its last token's K/V and write-back included)
and mlx-lm's own ``stream_generate`` on a prompt cache in the same run. Writes
``benchmarks/results/profile_warm.json``; the README and ``benchmarks/warm_phases.md`` hold a
table from it. For a sampling profile of the same run: ``py-spy record -o warm.svg -- python
benchmarks/profile_warm.py``.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import collections
import sys
import time
from collections.abc import Callable
from typing import Any

from mlx_lm.models.cache import make_prompt_cache

from bench_warm import TURN, history_ids, mlx_turn, settle
from common import base_parser, load, print_table, save
from engine import BlockPoolBatchEngine
from engine.contexts import Contexts
from engine.kv.block_writer import BlockWriter
from engine.kv.kv_store import KVBlockStore
from engine.runner import ModelRunner
from lab.report import fmt
from pool import BlockPool, ModelCacheSpec

GENERATE = sys.modules["mlx_lm.generate"]
PHASES: dict[str, tuple[Any, str]] = {
    "open": (Contexts, "open"),
    "materialize": (Contexts, "materialize"),
    "one pass": (ModelRunner, "first_token"),
    "merge": (GENERATE, "_merge_caches"),
    "prefill": (GENERATE.PromptProcessingBatch, "prompt"),
    "to-decode": (GENERATE.PromptProcessingBatch, "generate"),
    "decode": (GENERATE.GenerationBatch, "next"),
    "feed": (ModelRunner, "feed"),
    "write-back": (Contexts, "write_back"),
    "encode": (KVBlockStore, "encode"),
    "write layers": (BlockWriter, "write_layers"),
}


def instrument(totals: dict[str, float]) -> None:
    for name, (owner, attr) in PHASES.items():
        original: Callable[..., Any] = getattr(owner, attr)

        def timed(*args: Any, _f: Callable[..., Any] = original, _name: str = name, **kwargs: Any) -> Any:
            tic = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                totals[_name] += (time.perf_counter() - tic) * 1000

        setattr(owner, attr, timed)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=2000)
    parser.add_argument("--kv-bits", type=int, default=16)
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--hot-cache-bytes", type=int, default=None, help="0: gather every turn")
    args = parser.parse_args()
    model, tokenizer = load(args.model)
    spec = ModelCacheSpec.from_model(model, kv_bits=args.kv_bits)
    history = history_ids(tokenizer, args.history)
    turn = list(tokenizer.encode(TURN, add_special_tokens=False))
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, spec.blocks_for_context(args.history + 512)),
                                  spec, prefix_cache=False, hot_cache_bytes=args.hot_cache_bytes)
    totals: dict[str, float] = collections.defaultdict(float)
    instrument(totals)
    turns: list[dict[str, float]] = []
    blocks = None
    for n in range(args.warm + 1):
        settle()
        totals.clear()
        tic = time.perf_counter()
        uid = engine.submit("agent", history if blocks is None else turn, blocks, max_tokens=1)
        first_ms = done = None
        while done is None:
            out = engine.step_once()
            if first_ms is None and any(d.uid == uid for d in out.deltas):
                first_ms = (time.perf_counter() - tic) * 1000  # the token reaches the caller
            done = next((c for c in out.completions if c.uid == uid), None)
        total_ms = (time.perf_counter() - tic) * 1000
        blocks = done.blocks
        turns.append({**totals, "ttft": first_ms or 0.0, "total": total_ms})
        print(f"turn {n}: " + ", ".join(f"{k} {v:.1f}" for k, v in turns[-1].items()), flush=True)
    cache = make_prompt_cache(model)
    mlx_turn(model, tokenizer, history, cache)
    mlx_ms = [mlx_turn(model, tokenizer, turn, cache)[0] * 1000 for _ in range(args.warm)]
    settle()
    report(turns, mlx_ms, args)


def report(turns: list[dict[str, float]], mlx_ms: list[float], args: Any) -> None:
    first, later = turns[1], turns[2:]

    def median(key: str) -> float:
        values = sorted(t.get(key, 0.0) for t in later)
        return values[len(values) // 2]

    keys = [*PHASES, "ttft", "total"]
    rows = [(k, fmt(first.get(k, 0.0), 1), fmt(median(k), 1)) for k in keys]
    rows.append(("mlx-lm stream_generate TTFT", fmt(mlx_ms[0], 1), fmt(sorted(mlx_ms[1:])[len(mlx_ms[1:]) // 2], 1)))
    print_table(f"warm turn phases, ms ({args.history}-token history, {args.kv_bits}-bit blocks, "
                f"hot set {'off' if args.hot_cache_bytes == 0 else 'on'})",
                ("phase", "first warm", "later (median)"), rows)
    save("profile_warm", args.out, params=vars(args) | {"out": None},
         headline={"metric": "first warm TTFT ms", "value": first["ttft"]},
         data={"turns": turns, "mlx_warm_ms": mlx_ms})


if __name__ == "__main__":
    main()
