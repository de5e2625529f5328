"""Warm turn vs cold: time to first token of a turn whose ~2,000-token history is kept in blocks,
vs re-prefilling that whole history from scratch (goal: cold / warm >= 30x, issue 3).

Ours: warm = ``submit(turn, cache=<AgentBlocks>)`` (gather + prefill of the turn only);
cold = ``submit(history + turn, cache=None)``. mlx-lm in the same run: warm =
``stream_generate(turn, prompt_cache=<cache holding the history>)`` (trimmed back after
each turn), cold = ``stream_generate(history + turn)``. Runs alternate warm and cold.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import statistics
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm import stream_generate
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

from common import base_parser, load, print_table, ratio, save
from engine import BlockPoolBatchEngine, Completion
from lab.report import fmt
from pool import AgentBlocks, BlockPool, ModelCacheSpec

GOAL = 30.0
TURN = "\n\nQuestion: which colour did the fox in note 3 have?\nAnswer:"
COLOURS = ("red", "brown", "grey", "white", "black", "golden", "silver")
ANIMALS = ("fox", "owl", "horse", "otter", "crow", "whale", "lynx")


def history_ids(engine: BlockPoolBatchEngine, num_tokens: int) -> list[int]:
    """Varied synthetic notes, cut to exactly ``num_tokens`` tokens."""
    notes, ids = [], []
    i = 0
    while len(ids) < num_tokens:
        notes.extend(f"Note {i + k}: the {COLOURS[(i + k) % 7]} {ANIMALS[(i + k) * 3 % 7]} walked "
                     f"{(i + k) * 7 % 13 + 1} miles to the river and met {(i + k) % 5 + 2} friends.\n"
                     for k in range(50))
        i += 50
        ids = engine.encode("".join(notes))
    return ids[:num_tokens]


def engine_ttft(
    engine: BlockPoolBatchEngine, agent_id: str, prompt: list[int], cache: AgentBlocks | None
) -> tuple[float, Completion]:
    uid = engine.submit(agent_id, prompt, cache, max_tokens=1)
    completion = next(c for c in engine.step() if c.uid == uid)
    if completion.finish_reason == "error" or completion.ttft_s is None:
        raise RuntimeError(f"{agent_id}: {completion.error}")
    return completion.ttft_s, completion


def mlx_ttft(model: Any, tokenizer: Any, prompt: list[int], cache: list | None) -> tuple[float, int]:
    tic = time.perf_counter()
    response = next(iter(stream_generate(model, tokenizer, prompt, max_tokens=1, prompt_cache=cache)))
    return time.perf_counter() - tic, response.token


class WarmColdRun:
    """Both sides' state: the engine agent holding the history, and mlx-lm's prompt cache."""

    def __init__(self, model: Any, tokenizer: Any, engine: BlockPoolBatchEngine, history: list[int],
                 turn: list[int]) -> None:
        self.model, self.tokenizer, self.engine = model, tokenizer, engine
        self.history, self.turn = history, turn
        self.blocks = engine_ttft(engine, "warm", history, None)[1].blocks  # the history, kept in blocks
        self.mlx_cache = make_prompt_cache(model)
        model(mx.array(history)[None], cache=self.mlx_cache)
        mx.eval([c.state for c in self.mlx_cache])
        self.samples: dict[str, list[float]] = {"ours_warm": [], "ours_cold": [], "mlx_warm": [], "mlx_cold": []}

    def context(self) -> list[int]:
        return list(self.blocks.token_ids[: self.blocks.total_tokens])

    def warm(self) -> tuple[int, int]:
        """One warm turn on each side; returns their first tokens."""
        s, completion = engine_ttft(self.engine, "warm", self.turn, self.blocks)
        self.blocks = completion.blocks
        self.samples["ours_warm"].append(s)
        s, token = mlx_ttft(self.model, self.tokenizer, self.turn, self.mlx_cache)
        trim_prompt_cache(self.mlx_cache, self.mlx_cache[0].offset - len(self.history))
        self.samples["mlx_warm"].append(s)
        return completion.token_ids[0], token

    def cold(self, context: list[int]) -> tuple[int, int]:
        """The same turn with its whole history re-prefilled, on each side."""
        s, completion = engine_ttft(self.engine, "cold", context + self.turn, None)
        self.samples["ours_cold"].append(s)
        s, token = mlx_ttft(self.model, self.tokenizer, self.history + self.turn, None)
        self.samples["mlx_cold"].append(s)
        return completion.token_ids[0], token


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=2000, help="history tokens")
    parser.add_argument("--repeats", type=int, default=3, help="cold runs per side")
    parser.add_argument("--warm-per-cold", type=int, default=3, help="warm runs per cold run (they are cheap)")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    model, tokenizer = load(args.model)
    spec = ModelCacheSpec.from_model(model)
    pool = BlockPool(spec, spec.blocks_for_context(args.history + 1024) * 2)
    # No prefix sharing: "cold" must re-prefill the history the warm agent holds.
    engine = BlockPoolBatchEngine(model, tokenizer, pool, spec, prefix_cache=False)
    turn = list(engine.tokenizer.encode(TURN, add_special_tokens=False))  # continues the history: no BOS
    run = WarmColdRun(model, tokenizer, engine, history_ids(engine, args.history), turn)
    same_token: list[bool] = []
    for rep in range(repeats):
        context = run.context()
        cold = run.cold(context) if rep % 2 else None  # alternate which goes first
        warm = [run.warm() for _ in range(args.warm_per_cold)][0]  # the first one saw `context`
        cold = cold or run.cold(context)
        # Warm and cold saw the same context on each side, so greedy gives the same first token.
        same_token.append(warm == cold)
    report(run, same_token, args.out)


def report(run: WarmColdRun, same_token: list[bool], out: Path | None) -> None:
    med = {k: statistics.median(v) for k, v in run.samples.items()}
    ours_ratio, mlx_ratio = ratio(med["ours_cold"], med["ours_warm"]), ratio(med["mlx_cold"], med["mlx_warm"])
    rows = [(label, len(run.samples[f"{side}_warm"]), fmt(med[f"{side}_warm"] * 1000, 1),
             len(run.samples[f"{side}_cold"]), fmt(med[f"{side}_cold"] * 1000, 1), fmt(r, 1))
            for label, side, r in (("ours (blocks)", "ours", ours_ratio),
                                   ("mlx-lm (prompt_cache)", "mlx", mlx_ratio))]
    print_table(f"time to first token (medians), history {len(run.history)} tokens + turn {len(run.turn)} tokens "
                f"(goal cold/warm >= {GOAL:g}x)", ("", "warm n", "warm ms", "cold n", "cold ms", "cold/warm"), rows)
    print(f"ours warm / mlx-lm warm TTFT: {fmt(ratio(med['ours_warm'], med['mlx_warm']), 2)}; "
          f"same first token warm vs cold (ours and mlx-lm): {sum(same_token)}/{len(same_token)}")
    save("bench_warm", out, params={"history_tokens": len(run.history), "turn_tokens": len(run.turn)},
         headline={"metric": "TTFT cold / warm (ours)", "value": ours_ratio, "goal": f">= {GOAL:g}",
                   "mlx_lm_cold_over_warm": mlx_ratio, "met": ours_ratio is not None and ours_ratio >= GOAL},
         data={"samples_s": run.samples, "median_s": med, "same_first_token": same_token})


if __name__ == "__main__":
    main()
