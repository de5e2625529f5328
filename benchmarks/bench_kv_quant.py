"""Quantized blocks (issue 14): what 8 and 4 bits cost in quality and buy in capacity, vs 16.

Quality: each prompt is a first turn of one token (prefilled in float, then stored in the
format under test), then a second turn of greedy tokens whose every step attends to those
stored blocks; replies are compared token by token with 16-bit blocks. Perplexity: a fixed
text (this repo's README) is split in two; the first half goes into blocks, the second is
scored by the model over the gathered caches. Capacity, same run: resident agents of a
2,000-token context in a fixed KV budget, gather p95, warm-turn TTFT and decode tok/s.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import math
import os
import statistics
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from common import PROMPTS, base_parser, load, print_table, save
from engine import BlockPoolBatchEngine, Completion
from lab.report import fmt
from pool import BlockPool, ModelCacheSpec

BITS = (16, 8, 4)
EXTRA_PROMPTS = tuple(f"Write a short note about {t}." for t in (
    "the sea", "mountains", "a robot", "bread", "the moon", "trains", "bees", "winter", "libraries", "rivers",
    "clocks", "chess"))
FOLLOW_UP = " Go on."
BUDGET_BYTES = 256 << 20
README = Path(__file__).resolve().parent.parent / "README.md"


def engine_for(model: Any, tokenizer: Any, bits: int, total_blocks: int = 3000) -> BlockPoolBatchEngine:
    spec = ModelCacheSpec.from_model(model, kv_bits=bits)
    return BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, total_blocks), spec, max_batch_size=32)


def run_batch(engine: BlockPoolBatchEngine, turns: dict[str, tuple[Any, Any]], max_tokens: int) -> dict[str, Completion]:
    uids = {engine.submit(a, prompt, cache, max_tokens=max_tokens): a for a, (prompt, cache) in turns.items()}
    return {uids[c.uid]: c for c in engine.step()}


def replies(model: Any, tokenizer: Any, bits: int, prompts: list[str], max_tokens: int) -> dict[str, list[int]]:
    """The second turn's token ids per prompt (all prompts in one batch)."""
    engine = engine_for(model, tokenizer, bits)
    names = [f"p{i}" for i in range(len(prompts))]
    first = run_batch(engine, {n: (p, None) for n, p in zip(names, prompts)}, 1)
    starts = {n: first[n].blocks.total_tokens for n in names}
    run_batch(engine, {n: (FOLLOW_UP, first[n].blocks) for n in names}, max_tokens)
    return {n: engine.agent_blocks(n).token_ids[starts[n]:] for n in names}


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def perplexity(model: Any, tokenizer: Any, bits: int, text_ids: list[int]) -> tuple[float, np.ndarray]:
    """Perplexity of the text's second half given its first half stored in blocks; per-token log-probs."""
    half = len(text_ids) // 2
    engine = engine_for(model, tokenizer, bits)
    done = run_batch(engine, {"ppl": (text_ids[:half], None)}, 1)["ppl"]
    blocks = done.blocks
    assert blocks.token_ids[:half] == text_ids[:half], "the stored context is the text's first half"
    caches = engine._reconstruct_cache(blocks)
    # Keep tokens [0, half - 1) from the blocks and feed half - 1 again: its logits score text_ids[half].
    for cache in caches:
        cache.trim(blocks.total_tokens - (half - 1))
    inputs = mx.array(text_ids[half - 1 : -1])[None]
    logits = model(inputs, cache=caches)[0].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    target = mx.array(text_ids[half:])
    picked = np.array(mx.take_along_axis(logprobs, target[:, None], axis=-1)[:, 0])
    return math.exp(-float(picked.mean())), picked


def capacity(model: Any, tokenizer: Any, bits: int, history: list[int], warm_turns: int) -> dict[str, Any]:
    spec = ModelCacheSpec.from_model(model, kv_bits=bits)
    per_agent = spec.blocks_for_context(len(history) + 64)
    resident = BlockPool.from_memory_budget(spec, BUDGET_BYTES).total_blocks // per_agent
    engine = engine_for(model, tokenizer, bits, total_blocks=4 * per_agent)
    done = run_batch(engine, {"a": (history, None)}, 1)["a"]
    gathers = []
    for _ in range(30):
        gathers.append(engine.kv_store.gather(done.blocks)[1].ms)
    ttfts, rates = [], []
    for k in range(warm_turns):
        done = run_batch(engine, {"a": (f"\nQuestion {k}: what came next?\nAnswer:", done.blocks)}, 24)["a"]
        ttfts.append(done.ttft_s * 1000)
        rates.append(done.decode_tok_s or 0.0)
    return {"bits": bits, "kv_format": spec.kv_format, "bytes_per_block": spec.bytes_per_block,
            "blocks_per_agent": per_agent, "resident_agents": resident,
            "gather_p95_ms": float(np.percentile(gathers, 95)), "gather_ms": gathers,
            "warm_ttft_ms": statistics.median(ttfts), "warm_ttft_samples_ms": ttfts,
            "decode_tok_s": statistics.median(rates)}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--text-tokens", type=int, default=2000)
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_tokens, args.text_tokens = 6, 40, 800
    model, tokenizer = load(args.model)
    load_before = os.getloadavg()
    prompts = list(PROMPTS + EXTRA_PROMPTS)[: args.prompts]
    text_ids = tokenizer.encode(README.read_text())[: args.text_tokens]
    ref = replies(model, tokenizer, 16, prompts, args.max_tokens)
    ppl16, lp16 = perplexity(model, tokenizer, 16, text_ids)
    quality = []
    for bits in BITS[1:]:
        got = replies(model, tokenizer, bits, prompts, args.max_tokens)
        diffs = [first_difference(ref[n], got[n]) for n in ref]
        ppl, lp = perplexity(model, tokenizer, bits, text_ids)
        quality.append({"bits": bits, "identical_share": sum(d is None for d in diffs) / len(diffs),
                        "mean_first_diff": statistics.mean(d if d is not None else args.max_tokens for d in diffs),
                        "first_diffs": diffs, "ppl": ppl, "ppl_16": ppl16,
                        "mean_logprob_gap": float(np.mean(lp16 - lp))})
    history = tokenizer.encode(README.read_text())[:2000]
    cap = [capacity(model, tokenizer, bits, history, 5) for bits in BITS]
    load_after = os.getloadavg()
    print_table(f"Quality vs 16-bit blocks ({len(prompts)} prompts x {args.max_tokens} greedy tokens; "
                f"perplexity over {len(text_ids) - len(text_ids) // 2} tokens)",
                ("bits", "identical", "mean first diff", "ppl", "ppl 16", "mean logprob gap"),
                [(q["bits"], f"{q['identical_share']:.0%}", f"{q['mean_first_diff']:.1f}", fmt(q["ppl"]),
                  fmt(ppl16), f"{q['mean_logprob_gap']:.4f}") for q in quality])
    base = cap[0]
    print_table(f"Capacity ({BUDGET_BYTES >> 20} MiB KV, 2,000-token contexts; load {load_before[0]:.1f} -> "
                f"{load_after[0]:.1f})",
                ("format", "bytes/block", "agents", "x16", "gather p95 ms", "warm TTFT ms", "x16", "decode tok/s"),
                [(c["kv_format"], c["bytes_per_block"], c["resident_agents"],
                  f"{c['resident_agents'] / base['resident_agents']:.2f}", fmt(c["gather_p95_ms"]),
                  fmt(c["warm_ttft_ms"]), f"{c['warm_ttft_ms'] / base['warm_ttft_ms']:.2f}",
                  fmt(c["decode_tok_s"])) for c in cap])
    eight = cap[1]
    save("kv_quant", args.out,
         params={"prompts": len(prompts), "max_tokens": args.max_tokens, "text_tokens": len(text_ids),
                 "budget_bytes": BUDGET_BYTES, "load_avg_before": load_before, "load_avg_after": load_after},
         headline={"agents_8_vs_16": eight["resident_agents"] / base["resident_agents"],
                   "warm_ttft_8_vs_16": eight["warm_ttft_ms"] / base["warm_ttft_ms"],
                   "identical_share_8": quality[0]["identical_share"], "ppl_16": ppl16, "ppl_8": quality[0]["ppl"],
                   "ppl_4": quality[1]["ppl"]},
         data={"quality": quality, "capacity": cap})


if __name__ == "__main__":
    main()
