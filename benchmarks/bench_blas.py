"""The fast BLAS against MLX's bundled one, in the same run: matmul GFLOP/s, probe cost,
and (``--threads``) prefill and decode with 1 and 2 BLAS threads, quiet and busy.

Each timing runs in its own child process: a process cannot change its BLAS, nor (for
OpenBLAS) its thread count, once loaded. "Busy" means another process spins one core
meanwhile. The load average is recorded beside every figure (other work shares the
machine). Goal (issue 9): chosen / bundled >= 10x on the matmul.

``--record`` also writes the committed ``benchmarks/blas.md`` and ``benchmarks/blas.json``.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (the chosen BLAS before MLX)

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from common import base_parser, print_table, save
from engine import fastblas, load_model
from engine.blas.choice import Choice, choose
from engine.blas.environment import preload_vars, without_preload
from engine.blas.measure import SHAPE, bundled_env, chosen_env, matmul_rate
from engine.blas.probe import probe
from lab.report import fmt, machine_info, write_json, write_text

GOAL = 10.0
HERE = Path(__file__).resolve().parent
PREFILL_TOKENS = (512, 2048)
DECODE_TOKENS = 32
SPIN = "while True: pass"


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


@contextmanager
def busy(enabled: bool) -> Iterator[None]:
    """Another process spinning one core while the block runs (when ``enabled``)."""
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if enabled else None
    try:
        time.sleep(0.5 if enabled else 0)  # let it reach the CPU first
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def matmul_rows(choice: Choice, shapes: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    """Chosen and bundled GFLOP/s for each shape, alternating to share the machine's drift."""
    rows = []
    for shape in shapes:
        before = load_avg()
        bundled = matmul_rate(bundled_env(threads=choice.threads), shape=shape, min_time_s=0.5)
        chosen = matmul_rate(chosen_env(choice), shape=shape, min_time_s=1.0)
        rows.append({"shape": "x".join(map(str, shape)), "chosen_gflops": chosen.gflops,
                     "bundled_gflops": bundled.gflops, "ratio": chosen.gflops / bundled.gflops,
                     "chosen_files": chosen.blas_files, "load_before": before, "load_after": load_avg()})
    return rows


def probe_cost(choice: Choice) -> dict[str, Any]:
    """A cold probe (child process) and a remembered verdict (cache read), plus what
    ``import engine`` costs a start with the fast BLAS against opting out."""
    assert choice.library is not None
    cold = [probe(choice.library, threads=choice.threads).probe_s for _ in range(3)]
    cached = []
    for _ in range(20):
        tic = time.perf_counter()
        choose(warn=False)
        cached.append(time.perf_counter() - tic)
    return {"cold_probe_s": statistics.median(cold), "cached_choice_ms": 1000 * statistics.median(cached),
            "import_engine_ms": import_ms({}), "import_engine_opted_out_ms": import_ms({"BLOCKPOOL_FAST_BLAS": "0"}),
            "load": load_avg()}


def import_ms(extra: dict[str, str]) -> float:
    """Median wall time of ``python -c 'import engine'`` (verdict remembered)."""
    env = {**without_preload(os.environ), **extra}
    times = []
    for _ in range(7):
        tic = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import engine"], env=env, check=True, cwd=HERE.parent)
        times.append(time.perf_counter() - tic)
    return 1000 * statistics.median(times)


def thread_rows(choice: Choice, quick: bool) -> list[dict[str, Any]]:
    """Prefill and decode in a child per (threads, busy): SmolLM2-135M float32."""
    assert choice.library is not None
    rows = []
    for is_busy in (False, True):
        for threads in (1, 2):
            env = {**without_preload(os.environ), **preload_vars(choice.library, without_preload(os.environ), threads)}
            with busy(is_busy):
                before = load_avg()
                done = subprocess.run([sys.executable, __file__, "--child-model", *(["--quick"] if quick else [])],
                                      env=env, capture_output=True, text=True, check=True, cwd=HERE.parent)
                after = load_avg()
            rows.append({"threads": threads, "busy": is_busy, **json.loads(done.stdout.splitlines()[-1]),
                         "load_before": before, "load_after": after})
    return rows


def matmul_thread_rows(choice: Choice) -> list[dict[str, Any]]:
    """The reference matmul with 1 and 2 BLAS threads, quiet and busy: seconds, not minutes."""
    assert choice.library is not None
    rows = []
    for is_busy in (False, True):
        for threads in (1, 2):
            base = bundled_env(threads=threads)
            with busy(is_busy):
                before = load_avg()
                rate = matmul_rate({**base, **preload_vars(choice.library, base, threads)}, min_time_s=1.0)
                rows.append({"threads": threads, "busy": is_busy, "gflops": rate.gflops, "load_before": before,
                             "load_after": load_avg()})
    return rows


def child_model(quick: bool) -> None:
    """In the child: time prefill of 512 / 2,048 tokens and 32 decode steps."""
    model, tokenizer = load_model()
    text = "The history of the Roman Empire begins with a small town on the Tiber. " * 400
    ids = tokenizer.encode(text)
    result: dict[str, float] = {}
    for n in PREFILL_TOKENS[:1] if quick else PREFILL_TOKENS:
        cache = make_prompt_cache(model)
        mx.eval(model(mx.array([ids[:64]]), cache=make_prompt_cache(model)))  # warm-up
        tic = time.perf_counter()
        logits = model(mx.array([ids[:n]]), cache=cache)
        mx.eval(logits)
        result[f"prefill_{n}_tok_s"] = n / (time.perf_counter() - tic)
    token = mx.argmax(logits[:, -1, :], axis=-1)
    tic = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        logits = model(token[:, None], cache=cache)
        token = mx.argmax(logits[:, -1, :], axis=-1)
        mx.eval(token)
    result["decode_tok_s"] = DECODE_TOKENS / (time.perf_counter() - tic)
    print(json.dumps(result))


def markdown(data: dict[str, Any]) -> str:
    info = data["machine"]
    lines = [f"# BLAS on {info['cpu_model']} ({info['num_cpus']} cores), {info['date_utc']} UTC", "",
             f"Library: `{data['library']}` — {data['config']}; environment: "
             f"OPENBLAS_CORETYPE={data['env'].get('OPENBLAS_CORETYPE', '-')}, "
             f"OPENBLAS_L2_SIZE={data['env'].get('OPENBLAS_L2_SIZE', '-')}. "
             "Written by `benchmarks/bench_blas.py --threads --record`.", "", "## Matmul, float32, same run", "",
             "| shape (m x k x n) | chosen GFLOP/s | bundled GFLOP/s | ratio | load avg |", "|---|---|---|---|---|"]
    for row in data["matmul"]:
        lines.append(f"| {row['shape']} | {row['chosen_gflops']:.1f} | {row['bundled_gflops']:.1f} | "
                     f"{row['ratio']:.1f}x | {row['load_before']} → {row['load_after']} |")
    cost = data["probe"]
    lines += ["", "## Probe cost", "", f"- cold probe (child process): {cost['cold_probe_s']:.2f} s",
              f"- remembered verdict (`choose()`): {cost['cached_choice_ms']:.2f} ms",
              f"- `python -c 'import engine'`: {cost['import_engine_ms']:.0f} ms with the fast BLAS, "
              f"{cost['import_engine_opted_out_ms']:.0f} ms opted out (load avg {cost['load']})"]
    if data.get("matmul_threads"):
        lines += ["", f"## BLAS threads: the {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} matmul, GFLOP/s", "",
                  "| threads | other process spinning a core | GFLOP/s | load avg |", "|---|---|---|---|"]
        for row in data["matmul_threads"]:
            lines.append(f"| {row['threads']} | {'yes' if row['busy'] else 'no'} | {row['gflops']:.1f} | "
                         f"{row['load_before']} → {row['load_after']} |")
    if data.get("threads"):
        lines += ["", "## BLAS threads: SmolLM2-135M float32, tok/s", "",
                  "| threads | other process spinning a core | prefill 512 | prefill 2,048 | decode | load avg |",
                  "|---|---|---|---|---|---|"]
        for row in data["threads"]:
            lines.append(f"| {row['threads']} | {'yes' if row['busy'] else 'no'} | {fmt(row.get('prefill_512_tok_s'), 0)} | "
                         f"{fmt(row.get('prefill_2048_tok_s'), 0)} | {fmt(row.get('decode_tok_s'), 1)} | "
                         f"{row['load_before']} → {row['load_after']} |")
    return "\n".join(lines)


def main() -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--threads", action="store_true", help="also the 1 vs 2 thread table (minutes on 2 shared cores)")
    parser.add_argument("--record", action="store_true", help="write benchmarks/blas.md and blas.json too")
    parser.add_argument("--child-model", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_model:
        child_model(args.quick)
        return 0
    choice = fastblas.current_choice()
    if choice.library is None:
        print(f"no fast BLAS to compare: {choice.reason}")
        return 1
    shapes = [SHAPE] if args.quick else [SHAPE, (2048, 576, 1536)]
    data: dict[str, Any] = {"library": str(choice.library.path), "config": choice.verdict.config if choice.verdict else "",
                            "env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
                            "matmul": matmul_rows(choice, shapes), "probe": probe_cost(choice)}
    if args.threads:
        data["matmul_threads"] = matmul_thread_rows(choice)
        data["threads"] = thread_rows(choice, args.quick)
    print_table("matmul GFLOP/s, chosen vs bundled (same run)", ("shape", "chosen", "bundled", "ratio", "load"),
                [(r["shape"], fmt(r["chosen_gflops"], 1), fmt(r["bundled_gflops"], 1), fmt(r["ratio"], 1),
                  f"{r['load_before']}->{r['load_after']}") for r in data["matmul"]])
    print("\n" + markdown({**data, "machine": machine_info()}).split("## Probe cost", 1)[1])
    worst = min(r["ratio"] for r in data["matmul"])
    save("blas", args.out, params={"shapes": shapes, "threads_table": args.threads},
         headline={"metric": "chosen / bundled matmul GFLOP/s (worst shape)", "value": round(worst, 1),
                   "goal": f">= {GOAL}"}, data=data)
    if args.record:
        record = {**data, "machine": machine_info()}
        write_json(HERE / "blas.json", record)
        write_text(HERE / "blas.md", markdown(record))
        print(f"wrote {HERE / 'blas.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
