"""Model loading per dtype: GGUF conversion time, load time of the converted copy, decode tok/s.

Conversion runs into a fresh temporary cache folder, so it is measured cold; the
load that follows reuses that copy, as every later start does. Decode tok/s is
mlx-lm's own figure (``stream_generate``'s ``generation_tps``) for greedy tokens
after a short warm-up: best of ``--repeats`` runs taken round robin over the dtypes,
so that a shared, busy machine slows them alike.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlx_lm import stream_generate

from common import base_parser, print_table, save
from lab.report import fmt
from engine.loading.gguf_convert import DTYPES, ensure_converted
from engine.loading.loader import GEMMA_ALIAS, assembled_gemma_path, embedded_gguf_path, load_model
from engine.loading.paths import DEFAULT_MODEL_NAME

PROMPT = "The quick brown fox"


def quiet(message: str, fraction: float) -> None:
    pass


def gguf_source(name: str | None) -> Path:
    if name is None:
        return embedded_gguf_path()
    if name == GEMMA_ALIAS:
        return assembled_gemma_path(quiet)
    raise SystemExit(f"--model must be the default or {GEMMA_ALIAS!r} (a GGUF source), not {name!r}")


def decode_once(model: Any, tokenizer: Any, max_tokens: int) -> Any:
    last = None
    for last in stream_generate(model, tokenizer, PROMPT, max_tokens=max_tokens):
        pass
    return last


def convert_and_load(name: str | None, dtype: str) -> tuple[dict[str, Any], Any, Any]:
    source = gguf_source(name)  # outside the timing: Gemma's one-off chunk assembly
    tic = time.perf_counter()
    ensure_converted(source, dtype, quiet)
    conversion_s = time.perf_counter() - tic
    tic = time.perf_counter()
    model, tokenizer = load_model(name, dtype=dtype, progress=quiet)
    load_s = time.perf_counter() - tic
    tokenizer.eos_token_ids = set()  # exactly max_tokens tokens: an early EOS would skew tok/s
    decode_once(model, tokenizer, 4)  # warm-up
    return {"dtype": dtype, "conversion_s": conversion_s, "load_s": load_s}, model, tokenizer


def measure(name: str | None, dtypes: list[str], max_tokens: int, repeats: int) -> list[dict[str, Any]]:
    loaded = [convert_and_load(name, dtype) for dtype in dtypes]
    runs: dict[str, list[Any]] = {dtype: [] for dtype in dtypes}
    for _ in range(repeats):
        # Round robin, so every dtype sees the same share of a busy machine.
        for row, model, tokenizer in loaded:
            runs[row["dtype"]].append(decode_once(model, tokenizer, max_tokens))
    rows = []
    for row, _, _ in loaded:
        best = max(runs[row["dtype"]], key=lambda r: r.generation_tps)
        rows.append(row | {"decode_tok_s": best.generation_tps,
                           "decode_tok_s_runs": [r.generation_tps for r in runs[row["dtype"]]],
                           "prefill_tok_s": best.prompt_tps, "tokens": best.generation_tokens,
                           "peak_memory_gb": best.peak_memory})
    return rows


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "quantized"], choices=DTYPES)
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="decode runs per dtype (best is reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blockpool-bench-") as cache:
        os.environ["BLOCKPOOL_CACHE_DIR"] = cache  # cold conversions, the user cache untouched
        rows = measure(args.model, args.dtypes, 8 if args.quick else args.max_tokens, args.repeats)
    os_load = os.getloadavg()[0]  # other work on the machine skews tok/s: say how busy it was
    model_name = args.model or f"embedded {DEFAULT_MODEL_NAME}"
    print_table(
        f"Loading {model_name}: {args.max_tokens} greedy tokens, load average {os_load:.1f}",
        ("dtype", "conversion s", "load s", "decode tok/s", "prefill tok/s", "peak GB"),
        [(r["dtype"], fmt(r["conversion_s"]), fmt(r["load_s"]), fmt(r["decode_tok_s"], 1),
          fmt(r["prefill_tok_s"], 1), fmt(r["peak_memory_gb"])) for r in rows],
    )
    best = max(rows, key=lambda r: r["decode_tok_s"])
    params = {"model": args.model, "max_tokens": args.max_tokens, "repeats": args.repeats, "prompt": PROMPT,
              "load_average_1min": os_load}
    save("load", args.out, params=params,
         headline={"metric": f"decode tok/s ({best['dtype']}, fastest dtype)", "value": round(best["decode_tok_s"], 1)},
         data=rows)


if __name__ == "__main__":
    main()
