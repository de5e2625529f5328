"""Agents sharing a system prompt: blocks used and time to first token with prefix sharing
vs without, and vs mlx-lm's ``LRUPromptCache`` (which deep-copies a cached prompt per hit).

For each system prompt length, N agents (the same prompt, a different question each) are
submitted one after another (each turn runs to its first token before the next starts),
on three sides: ours with sharing, ours without, and mlx-lm's server-style flow
(``fetch_nearest_cache`` -> ``stream_generate`` -> ``insert_cache``). The runs are
sequential, so the state after agent n does not depend on later agents: one run of the
largest N gives the figures for every smaller N.
Goals (issue 11): memory with sharing <= 1/N of without for the shared part; TTFT of
agents 2..N >= 10x faster than agent 1 at 1,024 tokens.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import copy
import os
import statistics
import time
from typing import Any

from mlx_lm import stream_generate
from mlx_lm.models.cache import LRUPromptCache, make_prompt_cache

from common import base_parser, load, print_table, save
from engine import BlockPoolBatchEngine
from lab.report import fmt
from engine.kv.spill import model_key
from pool import BlockPool, ModelCacheSpec

WORDS = ("red", "brown", "grey", "white", "black", "golden", "silver", "fox", "owl", "horse", "river")


def system_ids(tokenizer: Any, num_tokens: int) -> list[int]:
    text, ids, i = "", [], 0
    while len(ids) < num_tokens:
        text += " ".join(f"Rule {i + k}: the {WORDS[(i + k) % 11]} {WORDS[(i + k) * 3 % 11]} goes first." for k in range(40))
        i += 40
        ids = list(tokenizer.encode(text))
    return ids[:num_tokens]


def question_ids(tokenizer: Any, n: int) -> list[int]:
    return list(tokenizer.encode(f"\nQuestion {n}: what goes first after rule {n * 7}?\nAnswer:",
                                 add_special_tokens=False))


def ours(model: Any, tokenizer: Any, spec: ModelCacheSpec, prompts: list[list[int]], *, sharing: bool) -> dict:
    pool = BlockPool(spec, spec.blocks_for_context(len(prompts[0]) + 64) * len(prompts) + 64,
                     model_key=model_key(model))
    engine = BlockPoolBatchEngine(model, tokenizer, pool, spec, prefix_cache=sharing)
    ttft_s, used, reused = [], [], []
    for n, prompt in enumerate(prompts):
        uid = engine.submit(f"agent-{n}", prompt, max_tokens=1)
        done = next(c for c in engine.step() if c.uid == uid)
        if done.ttft_s is None:
            raise RuntimeError(f"agent {n}: {done.error}")
        ttft_s.append(done.ttft_s)
        used.append(pool.used_blocks())
        reused.append(done.cached_tokens)
    engine.close()
    return {"ttft_s": ttft_s, "used_blocks": used, "reused_tokens": reused,
            "used_bytes": [u * spec.bytes_per_block for u in used]}


def mlx_lru(model: Any, tokenizer: Any, prompts: list[list[int]]) -> dict:
    """mlx-lm's server flow: nearest cached prompt (deep-copied, trimmed), prefill the rest."""
    lru = LRUPromptCache(max_size=len(prompts) + 1)
    key = "model"
    ttft_s, held_bytes = [], []
    for prompt in prompts:
        tic = time.perf_counter()
        cache, rest = lru.fetch_nearest_cache(key, prompt)
        cache = cache if cache is not None else make_prompt_cache(model)
        response = next(iter(stream_generate(model, tokenizer, rest, max_tokens=1, prompt_cache=cache)))
        ttft_s.append(time.perf_counter() - tic)
        lru.insert_cache(key, prompt, cache)  # the prompt's K/V (the sampled token is not in the cache)
        held_bytes.append(lru.nbytes)
        del response
    return {"ttft_s": ttft_s, "held_bytes": held_bytes}


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[256, 1024, 4096], help="system prompt tokens")
    parser.add_argument("--agents", type=int, default=8, help="largest N (every smaller N is read off the same run)")
    args = parser.parse_args()
    sizes = [256, 1024] if args.quick else args.prompts
    model, tokenizer = load(args.model)
    spec = ModelCacheSpec.from_model(model)
    results = []
    for size in sizes:
        system = system_ids(tokenizer, size)
        prompts = [system + question_ids(tokenizer, n) for n in range(args.agents)]
        load_before = load_avg()
        run = {"system_tokens": size, "load_before": load_before,
               "sharing": ours(model, tokenizer, spec, copy.deepcopy(prompts), sharing=True),
               "no_sharing": ours(model, tokenizer, spec, copy.deepcopy(prompts), sharing=False),
               "mlx_lru": mlx_lru(model, tokenizer, prompts), "load_after": load_avg()}
        results.append(run)
        print(f"system prompt {size} tokens done (load {load_before} -> {run['load_after']})")
    report(results, spec, args)


def rows_for(run: dict, spec: ModelCacheSpec, agent_counts: list[int]) -> list[tuple]:
    rows = []
    on, off, lru = run["sharing"], run["no_sharing"], run["mlx_lru"]
    for n in agent_counts:
        later = slice(1, n)
        t1 = on["ttft_s"][0]
        t_on, t_off, t_lru = (statistics.median(side["ttft_s"][later]) for side in (on, off, lru))
        rows.append((run["system_tokens"], n, on["used_blocks"][n - 1], off["used_blocks"][n - 1],
                     fmt(on["used_blocks"][n - 1] / off["used_blocks"][n - 1], 2),
                     fmt(lru["held_bytes"][n - 1] / 2**20, 1), fmt(on["used_bytes"][n - 1] / 2**20, 1),
                     fmt(t1 * 1000, 0), fmt(t_on * 1000, 0), fmt(t_off * 1000, 0), fmt(t_lru * 1000, 0),
                     fmt(t1 / t_on, 1)))
    return rows


def report(results: list[dict], spec: ModelCacheSpec, args: Any) -> None:
    counts = [n for n in (2, 4, 8) if n <= args.agents]
    rows = [row for run in results for row in rows_for(run, spec, counts)]
    print_table("N agents sharing a system prompt, one after another (TTFT: medians of agents 2..N)",
                ("prompt", "N", "blocks on", "blocks off", "on/off", "lru MiB", "ours MiB", "agent 1 ms",
                 "2..N on ms", "2..N off ms", "2..N lru ms", "agent1/2..N"), rows)
    for run in results:
        print(f"  prompt {run['system_tokens']}: load average {run['load_before']} -> {run['load_after']}")
    at_1024 = next((r for r in rows if r[0] == 1024 and r[1] == max(counts)), None)
    save("bench_prefix", args.out, params={"prompts": [r["system_tokens"] for r in results], "agents": args.agents,
                                           "block_tokens": spec.block_tokens, "bytes_per_block": spec.bytes_per_block},
         headline={"metric": "TTFT agent 1 / agents 2..N (sharing, 1,024-token prompt)",
                   "value": None if at_1024 is None else at_1024[-1], "goal": ">= 10x"},
         data=results)


if __name__ == "__main__":
    main()
