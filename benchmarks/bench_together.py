"""Agents that arrive together on one long system prompt, and a new agent on a cached prompt (issue 18).

1. N agents (4, 8) submitted in the same instant, each the same ~1,100-token system prompt
   plus its own question: time from submit to the LAST agent's first token, with prefix
   sharing on and off, and mlx-lm's ``BatchGenerator`` on the same prompts (it batches them
   and prefills each in full). Goal: sharing on <= 0.5x off; N-1 of N report the shared
   tokens in ``cached_tokens``.
2. After one agent has run a prompt, a new agent on the same prompt (its blocks, and the
   common part of the next block, in the pool) vs the first agent's warm turn at the same
   context length. Goal: new agent's time to first token <= 1.2x the warm turn's.
Every reply is one token; each side's time is to its first token.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import os
import time
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator

from bench_prefix import question_ids, system_ids
from common import base_parser, load, print_table, ratio, save
from engine import BlockPoolBatchEngine
from lab.report import fmt
from engine.kv.spill import model_key
from pool import BlockPool, ModelCacheSpec

GOAL_TOGETHER, GOAL_NEW_AGENT = 0.5, 1.2


def engine_for(model: Any, tokenizer: Any, spec: ModelCacheSpec, *, sharing: bool, contexts: int,
               tokens: int) -> BlockPoolBatchEngine:
    pool = BlockPool(spec, spec.blocks_for_context(tokens + 64) * contexts + 64, model_key=model_key(model))
    return BlockPoolBatchEngine(model, tokenizer, pool, spec, prefix_cache=sharing, max_batch_size=8)


def together_ours(model: Any, tokenizer: Any, spec: ModelCacheSpec, prompts: list[list[int]], *,
                  sharing: bool) -> dict[str, Any]:
    engine = engine_for(model, tokenizer, spec, sharing=sharing, contexts=len(prompts), tokens=len(prompts[0]))
    mx.synchronize()
    tic = time.perf_counter()
    uids = [engine.submit(f"agent-{n}", p, max_tokens=1) for n, p in enumerate(prompts)]
    first: dict[int, float] = {}
    cached: dict[int, int] = {}
    while engine.has_work():
        out = engine.step_once()
        now = time.perf_counter() - tic
        for delta in out.deltas:
            first.setdefault(delta.uid, now)
        for done in out.completions:
            if done.finish_reason == "error":
                raise RuntimeError(f"{done.agent_id}: {done.error}")
            cached[done.uid] = done.cached_tokens
    engine.close()
    return {"first_token_s": [first[u] for u in uids], "cached_tokens": [cached[u] for u in uids]}


def together_mlx(model: Any, tokenizer: Any, prompts: list[list[int]]) -> dict[str, Any]:
    gen = BatchGenerator(model, stop_tokens=[[t] for t in sorted(tokenizer.eos_token_ids)],
                         completion_batch_size=8, prefill_batch_size=8, prefill_step_size=512)
    mx.synchronize()
    tic = time.perf_counter()
    uids = gen.insert(prompts, max_tokens=[1] * len(prompts))
    first: dict[int, float] = {}
    while len(first) < len(uids):
        for response in gen.next_generated():
            first.setdefault(response.uid, time.perf_counter() - tic)
    gen.close()
    return {"first_token_s": [first[u] for u in uids]}


def new_agent_vs_warm(model: Any, tokenizer: Any, spec: ModelCacheSpec, system: list[int]) -> dict[str, Any]:
    """Agent A runs the prompt; then A's warm turn and a new agent B on the same prompt, alternating."""
    engine = engine_for(model, tokenizer, spec, sharing=True, contexts=8, tokens=len(system) + 64)
    prompt = system + question_ids(tokenizer, 0)
    turn = question_ids(tokenizer, 1)
    first = run(engine, "a", prompt, None)
    blocks = first["blocks"]
    warm_s, new_s, reused = [], [], []
    for n in range(3):
        b = run(engine, f"b-{n}", prompt, None)
        new_s.append(b["ttft_s"])
        reused.append(b["cached_tokens"])
        w = run(engine, "a", turn, blocks)
        warm_s.append(w["ttft_s"])
        blocks = w["blocks"]
    engine.close()
    return {"prompt_tokens": len(prompt), "warm_ttft_s": warm_s, "new_agent_ttft_s": new_s,
            "new_agent_cached_tokens": reused, "cold_ttft_s": first["ttft_s"]}


def run(engine: BlockPoolBatchEngine, agent_id: str, prompt: list[int], cache: Any) -> dict[str, Any]:
    mx.synchronize()
    uid = engine.submit(agent_id, prompt, cache, max_tokens=1)
    done = next(c for c in engine.step() if c.uid == uid)
    if done.ttft_s is None:
        raise RuntimeError(f"{agent_id}: {done.error}")
    return {"ttft_s": done.ttft_s, "blocks": done.blocks, "cached_tokens": done.cached_tokens}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--system", type=int, default=1100, help="shared system prompt tokens")
    parser.add_argument("--agents", default="4,8", help="agent counts, comma-separated")
    args = parser.parse_args()
    counts = [4] if args.quick else [int(x) for x in args.agents.split(",")]
    model, tokenizer = load(args.model)
    spec = ModelCacheSpec.from_model(model)
    system = system_ids(tokenizer, args.system)
    load_before = os.getloadavg()
    together = []
    for n in counts:
        prompts = [system + question_ids(tokenizer, k) for k in range(n)]
        together.append({"agents": n, "sharing": together_ours(model, tokenizer, spec, prompts, sharing=True),
                         "no_sharing": together_ours(model, tokenizer, spec, prompts, sharing=False),
                         "mlx_batch": together_mlx(model, tokenizer, prompts)})
        print(f"{n} agents together done", flush=True)
    single = new_agent_vs_warm(model, tokenizer, spec, system)
    report(together, single, args, (load_before, os.getloadavg()))


def report(together: list[dict], single: dict, args: Any, loads: tuple) -> None:
    rows = []
    for r in together:
        on, off, theirs = (max(r[k]["first_token_s"]) for k in ("sharing", "no_sharing", "mlx_batch"))
        shared = sum(c > 0 for c in r["sharing"]["cached_tokens"])
        rows.append((r["agents"], fmt(on, 2), fmt(off, 2), fmt(theirs, 2), fmt(ratio(on, off), 2),
                     fmt(ratio(on, theirs), 2), f"{shared}/{r['agents']}", max(r["sharing"]["cached_tokens"])))
    print_table(f"N agents submitted together, {args.system}-token shared prompt: seconds to the LAST first token "
                f"(goal on/off <= {GOAL_TOGETHER})",
                ("N", "sharing on s", "off s", "mlx-lm batch s", "on/off", "on/mlx-lm", "shared", "cached tok"), rows)
    warm = sorted(single["warm_ttft_s"])[1]
    new = sorted(single["new_agent_ttft_s"])[1]
    print_table(f"a new agent on a cached {single['prompt_tokens']}-token prompt vs a warm turn (medians of 3; "
                f"goal new/warm <= {GOAL_NEW_AGENT})",
                ("new agent ms", "warm turn ms", "new/warm", "cached tok", "cold ms"),
                [(fmt(new * 1000, 0), fmt(warm * 1000, 0), fmt(ratio(new, warm), 2),
                  single["new_agent_cached_tokens"][0], fmt(single["cold_ttft_s"] * 1000, 0))])
    print(f"load average {' '.join(f'{x:.2f}' for x in loads[0])} -> {' '.join(f'{x:.2f}' for x in loads[1])}")
    worst = max(ratio(max(r["sharing"]["first_token_s"]), max(r["no_sharing"]["first_token_s"])) for r in together)
    save("bench_together", args.out, params={"system_tokens": args.system, "agents": [r["agents"] for r in together]},
         headline={"metric": "last first token, sharing on / off (worst N)", "value": worst,
                   "goal": f"<= {GOAL_TOGETHER}", "met": worst <= GOAL_TOGETHER,
                   "new_agent_over_warm": ratio(new, warm)},
         data={"together": together, "new_agent": single, "load_average": loads})


if __name__ == "__main__":
    main()
