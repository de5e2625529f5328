"""Warm turn vs mlx-lm's prompt cache, the first one after a cold turn included (issue 18).

For each history size (2K, 8K tokens) and block format (16-bit, 8-bit), in one run:
  ours   a cold turn ``submit(history, cache=None)``, then warm turns
         ``submit(turn, cache=<its blocks>)``: the first right after the cold one, then more;
         once more with the hot set off (``hot_cache_bytes=0``: every warm turn gathers its
         blocks, as a context restored from disk or pushed out of the hot set does);
  mlx-lm ``stream_generate(history)`` on a fresh ``make_prompt_cache``, then warm turns
         ``stream_generate(turn, prompt_cache=<that cache>)``, trimmed back after each.
Every turn asks for one token; each side's time is to its first token as a caller receives
it (ours: the ``step_once`` output that streams it; mlx-lm: the first yield). Before each timed
call the previous call's work is finished (``mx.synchronize``), so neither side pays for
the other's (mlx-lm evaluates the next token in the background). Goals: first and median
later warm TTFT <= 1.00x mlx-lm's; cold / warm >= 50x at 2K.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import gc
import statistics
import time
from typing import Any

import mlx.core as mx
from mlx_lm import stream_generate
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

from common import base_parser, load, print_table, ratio, save
from engine import BlockPoolBatchEngine
from lab.report import fmt
from pool import AgentBlocks, BlockPool, ModelCacheSpec

GOAL_WARM, GOAL_COLD_OVER_WARM = 1.00, 50.0
TURN = "\n\nQuestion: which colour did the fox in note 3 have?\nAnswer:"
COLOURS = ("red", "brown", "grey", "white", "black", "golden", "silver")
ANIMALS = ("fox", "owl", "horse", "otter", "crow", "whale", "lynx")


def history_ids(tokenizer: Any, num_tokens: int) -> list[int]:
    """Varied synthetic notes, cut to exactly ``num_tokens`` tokens."""
    notes: list[str] = []
    ids: list[int] = []
    i = 0
    while len(ids) < num_tokens:
        notes.extend(f"Note {i + k}: the {COLOURS[(i + k) % 7]} {ANIMALS[(i + k) * 3 % 7]} walked "
                     f"{(i + k) * 7 % 13 + 1} miles to the river and met {(i + k) % 5 + 2} friends.\n"
                     for k in range(50))
        i += 50
        ids = list(tokenizer.encode("".join(notes)))
    return ids[:num_tokens]


def settle() -> None:
    """Finish whatever the last call left running (mlx-lm's next token, our write-back)."""
    mx.synchronize()
    gc.collect()


def ours_turn(engine: BlockPoolBatchEngine, agent_id: str, prompt: list[int],
              cache: AgentBlocks | None) -> tuple[float, AgentBlocks, int]:
    """Seconds from ``submit`` to the step output that streams the turn's first token (what a
    user sees), its blocks and that token."""
    settle()
    tic = time.perf_counter()
    uid = engine.submit(agent_id, prompt, cache, max_tokens=1)
    first_s = completion = None
    while completion is None:
        out = engine.step_once()
        if first_s is None and any(d.uid == uid for d in out.deltas):
            first_s = time.perf_counter() - tic
        completion = next((c for c in out.completions if c.uid == uid), None)
    if completion.finish_reason == "error" or first_s is None:
        raise RuntimeError(f"{agent_id}: {completion.error}")
    return first_s, completion.blocks, completion.token_ids[0]


def mlx_turn(model: Any, tokenizer: Any, prompt: list[int], cache: list) -> tuple[float, int]:
    settle()
    tic = time.perf_counter()
    response = next(iter(stream_generate(model, tokenizer, prompt, max_tokens=1, prompt_cache=cache)))
    return time.perf_counter() - tic, response.token


def run_ours(model: Any, tokenizer: Any, history: list[int], turn: list[int], kv_bits: int, *, warm: int,
             hot: bool) -> dict[str, Any]:
    """A cold turn, then ``warm`` turns each continuing the last (as a conversation does)."""
    spec = ModelCacheSpec.from_model(model, kv_bits=kv_bits)
    pool = BlockPool(spec, spec.blocks_for_context(len(history) + (warm + 1) * (len(turn) + 1)) + 8)
    # No prefix sharing: the cold turn prefills its whole history.
    with BlockPoolBatchEngine(model, tokenizer, pool, spec, prefix_cache=False,
                              hot_cache_bytes=None if hot else 0) as engine:
        cold_s, blocks, cold_token = ours_turn(engine, "agent", history, None)
        warm_s, tokens = [], []
        for _ in range(warm):
            s, blocks, token = ours_turn(engine, "agent", turn, blocks)
            warm_s.append(s)
            tokens.append(token)
        return {"cold_s": cold_s, "warm_s": warm_s, "tokens": tokens, "cold_token": cold_token,
                "context_tokens": blocks.total_tokens}


def run_mlx(model: Any, tokenizer: Any, history: list[int], turn: list[int], *, warm: int) -> dict[str, Any]:
    """The same on one ``make_prompt_cache``: it keeps each turn, as ours does."""
    cache = make_prompt_cache(model)
    cold_s, cold_token = mlx_turn(model, tokenizer, history, cache)
    warm_s, tokens = [], []
    for _ in range(warm):
        s, token = mlx_turn(model, tokenizer, turn, cache)
        warm_s.append(s)
        tokens.append(token)
    settle()
    return {"cold_s": cold_s, "warm_s": warm_s, "tokens": tokens, "cold_token": cold_token,
            "context_tokens": cache[0].offset}


def summary(run: dict[str, Any]) -> dict[str, float]:
    later = run["warm_s"][1:]
    return {"cold_s": run["cold_s"], "first_warm_s": run["warm_s"][0],
            "later_warm_s": statistics.median(later) if later else run["warm_s"][0]}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--histories", default="2000,8000", help="history sizes in tokens, comma-separated")
    parser.add_argument("--kv-bits", default="16,8", help="block formats, comma-separated (16, 8, 4)")
    parser.add_argument("--warm", type=int, default=6, help="warm turns after each cold one")
    args = parser.parse_args()
    histories = [2000] if args.quick else [int(x) for x in args.histories.split(",")]
    formats = [int(x) for x in args.kv_bits.split(",")]
    model, tokenizer = load(args.model)
    turn = list(tokenizer.encode(TURN, add_special_tokens=False))  # continues the history: no BOS
    results: list[dict[str, Any]] = []
    for size in histories:
        history = history_ids(tokenizer, size)
        mlx = run_mlx(model, tokenizer, history, turn, warm=args.warm)
        for bits in formats:
            for hot in (True, False):
                ours = run_ours(model, tokenizer, history, turn, bits, warm=args.warm, hot=hot)
                results.append({"history_tokens": size, "kv_bits": bits, "hot": hot, "ours": ours, "mlx": mlx,
                                "same_tokens": ours["tokens"] == mlx["tokens"] and ours["cold_token"] == mlx["cold_token"]})
                print(f"history {size}, {bits}-bit, hot set {'on' if hot else 'off'}: "
                      f"{fmt(summary(ours)['first_warm_s'] * 1000, 0)} ms first warm", flush=True)
    report(results, turn, args.out)


def report(results: list[dict[str, Any]], turn: list[int], out: Any) -> None:
    rows = []
    for r in results:
        ours, mlx = summary(r["ours"]), summary(r["mlx"])
        rows.append((r["history_tokens"], f"{r['kv_bits']}-bit", "on" if r["hot"] else "off",
                     fmt(ours["first_warm_s"] * 1000, 0), fmt(mlx["first_warm_s"] * 1000, 0),
                     fmt(ratio(ours["first_warm_s"], mlx["first_warm_s"]), 2),
                     fmt(ours["later_warm_s"] * 1000, 0), fmt(mlx["later_warm_s"] * 1000, 0),
                     fmt(ratio(ours["later_warm_s"], mlx["later_warm_s"]), 2),
                     fmt(ratio(ours["cold_s"], ours["first_warm_s"]), 1), fmt(ratio(mlx["cold_s"], mlx["first_warm_s"]), 1),
                     "yes" if r["same_tokens"] else "NO"))
    print_table(f"time to first token, warm turns of {len(turn)} tokens (goals: ours/mlx-lm <= {GOAL_WARM:.2f}, "
                f"cold/warm >= {GOAL_COLD_OVER_WARM:g}x at 2K)",
                ("history", "blocks", "hot set", "1st warm ms", "mlx ms", "ratio", "later ms", "mlx ms", "ratio",
                 "cold/warm", "mlx cold/warm", "same tokens"), rows)
    hot16 = [r for r in results if r["hot"]]
    worst = max(max(ratio(summary(r["ours"])[k], summary(r["mlx"])[k]) for k in ("first_warm_s", "later_warm_s"))
                for r in hot16)
    two_k = [ratio(summary(r["ours"])["cold_s"], summary(r["ours"])["first_warm_s"])
             for r in hot16 if r["history_tokens"] <= 2048 and r["kv_bits"] == 16]
    save("bench_warm", out, params={"turn_tokens": len(turn)},
         headline={"metric": "worst warm TTFT ours / mlx-lm (hot set on; first and later turns)", "value": worst,
                   "goal": f"<= {GOAL_WARM:.2f}", "met": worst <= GOAL_WARM,
                   "cold_over_warm_2k": two_k[0] if two_k else None},
         data=results)


if __name__ == "__main__":
    main()
