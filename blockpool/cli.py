"""``blockpool``: the seed's experiments, the benchmarks, a short demo, exports, the doctor and the
server (``blockpool serve``) from the command line; the subcommands' work is in ``blockpool.commands``.

The top of the dependency graph: it may import every package. Nothing heavy is imported at
module level: importing ``engine`` loads the fast BLAS (``engine.fastblas``), which must
happen before MLX loads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine import fastblas
from engine.loading.paths import DEFAULT_MODEL_NAME

from .commands import (
    UsageError,
    cmd_bench,
    cmd_demo,
    cmd_doctor,
    cmd_exp005,
    cmd_exp006,
    cmd_export,
    cmd_serve,
    run_serve,
)

DEFAULT_OUT = Path("experiments")


def _int_at_least(minimum: int, words: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {words}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def context_list(text: str) -> list[int]:
    """``4096,8192`` -> [4096, 8192]: positive token counts, comma-separated."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated token counts such as 4096,8192")
    return [positive_int(p) for p in parts]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blockpool",
        description="Block-pool KV-cache batch engine for MLX: the seed's experiments, benchmarks and a demo.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_exp005(sub)
    add_exp006(sub)
    add_bench(sub)
    add_demo(sub)
    add_export(sub)
    add_doctor(sub)
    add_serve(sub)
    return parser


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="NAME",
                   help="model to load: a .gguf file, an mlx-lm directory, a hub id or 'gemma3-270m' "
                        f"(default: the embedded {DEFAULT_MODEL_NAME})")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16", "quantized"),
                   help="weights dtype (default: float32 on the CPU backend, quantized on a GPU)")


def kv_bits_list(text: str) -> list[int]:
    try:
        bits = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        bits = []
    if not bits or any(b not in (16, 8, 4) for b in bits):
        raise argparse.ArgumentTypeError(f"{text!r}: give block formats from 16, 8, 4, e.g. 16,8,4")
    return bits


def add_kv_bits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kv-bits", type=int, choices=(16, 8, 4), default=16,
                   help="K/V at rest in blocks: 16 = the model's floats (default), 8 or 4 = quantized")


def add_exp005(sub: Any) -> None:
    p = sub.add_parser("exp005", help="EXP-005: engine output byte-identical to mlx_lm.generate",
                       description="Run the seed's EXP-005 and write exp_005_references.json, exp_005_results.csv "
                                   "and EXP-005-blockpool-correctness.md. Exit 0 only when all GO criteria hold.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="output folder (default: experiments/)")
    add_model_options(p)
    p.add_argument("--max-tokens", type=positive_int, default=100, metavar="N", help="tokens per prompt (default: 100)")
    p.add_argument("--telemetry-log", type=Path, default=None, metavar="FILE", help="write engine events as JSON Lines")
    p.add_argument("--leak-runs", type=positive_int, default=10, help=argparse.SUPPRESS)
    add_kv_bits(p)
    p.set_defaults(func=cmd_exp005)


def add_exp006(sub: Any) -> None:
    p = sub.add_parser("exp006", help="EXP-006: block gather benchmark on Gemma 3 12B shapes",
                       description="Time the engine's _reconstruct_cache on synthetic Gemma 3 12B blocks against a "
                                   "plain memory copy; write exp_006_timings.json, a histogram and "
                                   "EXP-006-block-gather-benchmark.md with the GO/CONDITIONAL/NO-GO verdict.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="output folder (default: experiments/)")
    p.add_argument("--runs", type=positive_int, default=100, metavar="N",
                   help="timed gathers per context (default: 100)")
    p.add_argument("--contexts", type=context_list, default=[256, 1024, 4096, 8192, 16384, 32768], metavar="LIST",
                   help="context sizes in tokens, comma-separated (default: 256,1024,4096,8192,16384,32768)")
    p.add_argument("--concat-runs", type=non_negative_int, default=5, metavar="N",
                   help="runs of the mx.concatenate baseline (default: 5)")
    p.add_argument("--warmup", type=non_negative_int, default=2, metavar="N",
                   help="untimed gathers before timing each context (default: 2)")
    p.add_argument("--strict", action="store_true", help="exit 1 unless the verdict is GO")
    # Default 16 only: on an x86 CPU a quantized gather of float16 caches runs at ~0.3 GB/s (float16
    # conversion), so 100 runs of 32K at 8 and 4 bits would take hours there.
    p.add_argument("--kv-bits", type=kv_bits_list, default=[16], metavar="LIST",
                   help="block formats to time, comma-separated from 16, 8, 4, e.g. 16,8,4 (default: 16; "
                        "the first gives the verdict)")
    # Small shapes for tests; the defaults are Gemma 3 12B's.
    p.add_argument("--layers", type=positive_int, default=48, help=argparse.SUPPRESS)
    p.add_argument("--kv-heads", "--heads", type=positive_int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--head-dim", type=positive_int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--block-tokens", type=positive_int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--window", type=positive_int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--global-every", type=positive_int, default=6, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_exp006)


def add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="run the benchmarks (source checkout only)",
                       description="Run benchmarks/run_all.py: each benchmark prints a table and writes "
                                   "benchmarks/results/<name>.json.")
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run, e.g. single batch (default: all)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    p.set_defaults(func=cmd_bench)


def add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="a short multi-agent run printing streamed text and pool usage",
                       description="Run a few agents together through the engine (two turns each, the second "
                                   "continuing from the blocks of the first), printing text and pool usage.")
    add_model_options(p)
    p.add_argument("--agents", type=positive_int, default=3, metavar="N", help="agents (default: 3)")
    p.add_argument("--max-tokens", type=positive_int, default=40, metavar="N", help="tokens per turn (default: 40)")
    p.add_argument("--telemetry-log", type=Path, default=None, metavar="FILE", help="write engine events as JSON Lines")
    add_kv_bits(p)
    p.set_defaults(func=cmd_demo)


def add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="write a saved blockpool-tui conversation as Markdown",
                       description="Print (or write to --out) the Markdown of a session's agents: the last "
                                   "session and all its agents unless told otherwise.")
    p.add_argument("--session", type=positive_int, default=None, metavar="N", help="session id (default: the last)")
    p.add_argument("--agent", default=None, metavar="NAME", help="only this agent (default: every agent)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="write here instead of printing (a new name such as FILE-2.md when FILE exists)")
    p.add_argument("--force", action="store_true", help="overwrite --out when it exists")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="folder of sessions.db (default: $BLOCKPOOL_DATA_DIR or the user data folder)")
    p.set_defaults(func=cmd_export)


def add_doctor(sub: Any) -> None:
    p = sub.add_parser("doctor", help="what blockpool runs on (MLX, BLAS, CPU, data), for a bug report",
                       description="Print MLX's version and device, the BLAS in use with its probe verdict and a "
                                   "matmul GFLOP/s against MLX's bundled BLAS, the CPU's flags, where models, "
                                   "sessions and spill files live and their size, and the optional models. "
                                   "Exit 0 when all is usable, 1 with the reasons when not.")
    p.add_argument("--no-measure", action="store_true", help="skip the matmul timing (a few seconds)")
    p.set_defaults(func=cmd_doctor)


def add_serve(sub: Any) -> None:
    # The server parses its own options (server/cli.py): `blockpool serve --help` lists them.
    p = sub.add_parser("serve", add_help=False, help="an OpenAI-compatible HTTP server on the engine",
                       description="Run `blockpool serve --help` for the options.")
    p.add_argument("serve_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_serve)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``blockpool`` console script; returns the exit code."""
    if argv is None:
        fastblas.reexec_if_needed()  # before anything imports MLX
        argv = sys.argv[1:]
    argv = list(argv)
    if argv[:1] == ["serve"]:  # argparse cannot hand leading options to a sub-parser: the server parses them
        return run_serve(argv[1:])
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:
        print(f"blockpool {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def module_main() -> int:
    """``python -m blockpool``: a re-exec must restart the module, not blockpool/__main__.py as a script."""
    argv = sys.argv[1:]
    sys.argv = ["-m", "blockpool", *argv]
    fastblas.reexec_if_needed()
    return main(argv)
