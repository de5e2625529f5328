"""One agent through the engine vs ``mlx_lm.generate`` on the same prompts: decode tok/s.

Runs alternate (ours first, then theirs first) to cancel drift on a shared machine.
mlx-lm is timed through ``stream_generate`` (the function ``generate`` wraps) so its
first token can be time-stamped; decode tok/s = (tokens - 1) / (total - time to first token)
on both sides. Goal (issue 3): ours / theirs >= 1.0.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import time
from typing import Any

from mlx_lm import stream_generate

from common import PROMPTS, RunTiming, base_parser, decode_rate, load, print_table, ratio, save, timing_dict
from engine import BlockPoolBatchEngine
from lab.report import fmt
from pool import BlockPool, ModelCacheSpec

GOAL = 1.0


def run_mlx_lm(model: Any, tokenizer: Any, prompt: str, max_tokens: int) -> RunTiming:
    tic = time.perf_counter()
    first: float | None = None
    tokens, text = 0, ""
    for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
        first = first or time.perf_counter()
        tokens, text = response.generation_tokens, text + response.text
    end = time.perf_counter()
    return RunTiming((first or end) - tic, end - tic, tokens, text)


def run_engine(engine: BlockPoolBatchEngine, prompt: str, max_tokens: int) -> RunTiming:
    tic = time.perf_counter()
    uid = engine.submit("bench", prompt, None, max_tokens=max_tokens)
    completion = next(c for c in engine.step() if c.uid == uid)
    end = time.perf_counter()
    ttft = completion.ttft_s if completion.ttft_s is not None else end - tic
    return RunTiming(ttft, end - tic, completion.generated_tokens, completion.text)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the prompts")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    max_tokens = 32 if args.quick else args.max_tokens
    model, tokenizer = load(args.model)
    spec = ModelCacheSpec.from_model(model)
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, spec.blocks_for_context(1024)), spec)
    run_engine(engine, "Hello", 4)  # warm-up, untimed
    run_mlx_lm(model, tokenizer, "Hello", 4)
    ours: list[RunTiming] = []
    theirs: list[RunTiming] = []
    rows, samples = [], []
    for rep in range(repeats):
        for i, prompt in enumerate(PROMPTS[:3]):
            ours_first = (rep * 3 + i) % 2 == 0
            if ours_first:
                o = run_engine(engine, prompt, max_tokens)
                t = run_mlx_lm(model, tokenizer, prompt, max_tokens)
            else:
                t = run_mlx_lm(model, tokenizer, prompt, max_tokens)
                o = run_engine(engine, prompt, max_tokens)
            ours.append(o)
            theirs.append(t)
            rows.append((rep, i, "ours" if ours_first else "mlx-lm", o.tokens, t.tokens, fmt(o.decode_tok_s),
                         fmt(t.decode_tok_s), fmt(ratio(o.decode_tok_s, t.decode_tok_s), 3), o.text == t.text))
            samples.append({"repeat": rep, "prompt": i, "ours": timing_dict(o), "mlx_lm": timing_dict(t),
                            "identical_text": o.text == t.text})
    ours_rate, theirs_rate = decode_rate(ours), decode_rate(theirs)
    overall = ratio(ours_rate, theirs_rate)
    rows.append(("all", "", "", sum(r.tokens for r in ours), sum(r.tokens for r in theirs), fmt(ours_rate),
                 fmt(theirs_rate), fmt(overall, 3), all(s["identical_text"] for s in samples)))
    print_table(f"single agent decode tok/s, max_tokens={max_tokens} (goal ours/mlx-lm >= {GOAL})",
                ("rep", "prompt", "first", "ours tok", "mlx tok", "ours tok/s", "mlx-lm tok/s", "ratio", "same text"),
                rows)
    save("bench_single", args.out, params={"max_tokens": max_tokens, "repeats": repeats, "prompts": list(PROMPTS[:3])},
         headline={"metric": "decode tok/s ours / mlx_lm.generate", "value": overall, "goal": f">= {GOAL}",
                   "ours_tok_s": ours_rate, "mlx_lm_tok_s": theirs_rate,
                   "met": overall is not None and overall >= GOAL},
         data=samples)


if __name__ == "__main__":
    main()
