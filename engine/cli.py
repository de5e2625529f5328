"""``blockpool``: the seed's experiments, the benchmarks and a short demo from the command line.

Nothing heavy is imported at module level: importing ``engine`` loads the fast BLAS
(``engine.fastblas``), which must happen before MLX loads.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine import fastblas

DEFAULT_OUT = Path("experiments")
BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


class UsageError(Exception):
    """A problem with what the user asked for (exit code 2, message on stderr)."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def context_list(text: str) -> list[int]:
    """``4096,8192`` -> [4096, 8192]: positive token counts, comma-separated."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated token counts such as 4096,8192")
    return [positive_int(p) for p in parts]


# -- subcommands -------------------------------------------------------------------


def cmd_exp005(args: argparse.Namespace) -> int:
    from lab.exp005 import run_exp005

    model, tokenizer = load(args.model, args.dtype)
    name = args.model or "embedded SmolLM2-135M-Instruct"
    with telemetry_recorder(args.telemetry_log) as recorder:
        print(f"EXP-005 on {name}, max_tokens={args.max_tokens}")
        result = run_exp005(model, tokenizer, out_dir=args.out, model_name=name, max_tokens=args.max_tokens,
                            leak_runs=args.leak_runs, recorder=recorder, kv_bits=args.kv_bits)
    print_artifacts(result.artifacts)
    print(f"EXP-005 {'PASS (GO)' if result.go else 'FAIL (NO-GO)'}")
    return 0 if result.go else 1


def cmd_exp006(args: argparse.Namespace) -> int:
    from lab.exp006 import SyntheticShape, run_exp006
    from lab.exp006_report import plot_hint, verdict, verdict_line

    try:
        shape = SyntheticShape(n_layers=args.layers, n_kv_heads=args.kv_heads, head_dim=args.head_dim,
                               block_tokens=args.block_tokens, sliding_window=args.window,
                               global_every=args.global_every)
        shape.spec()
    except ValueError as exc:
        raise UsageError(f"invalid synthetic shape: {exc}") from exc
    result = run_exp006(args.out, runs=args.runs, contexts=args.contexts, shape=shape,
                        concat_runs=args.concat_runs, warmup=args.warmup, kv_bits=args.kv_bits)
    print_artifacts(result.artifacts)
    if (hint := plot_hint(result.artifacts)) is not None:
        print(hint, file=sys.stderr)
    print(verdict_line(result).replace("**", ""))
    return 1 if args.strict and verdict(result.headline.gather) != "GO" else 0


def cmd_bench(args: argparse.Namespace) -> int:
    runner = BENCHMARKS_DIR / "run_all.py"
    if not runner.is_file():
        raise UsageError(f"no benchmarks at {BENCHMARKS_DIR}: they ship with the source checkout, not the wheel")
    command = [sys.executable, str(runner), *args.names, *(["--quick"] if args.quick else [])]
    return subprocess.call(command)


def cmd_demo(args: argparse.Namespace) -> int:
    from lab.demo import run_demo

    model, tokenizer = load(args.model, args.dtype)
    with telemetry_recorder(args.telemetry_log) as recorder:
        run_demo(model, tokenizer, num_agents=args.agents, max_tokens=args.max_tokens, recorder=recorder,
                 kv_bits=args.kv_bits)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from engine.doctor import run_doctor

    return run_doctor(measure=not args.no_measure)


def cmd_serve(args: argparse.Namespace) -> int:
    return run_serve(args.serve_args)


def run_serve(argv: Sequence[str]) -> int:
    from server.cli import main as serve_main  # lazy: the engine does not depend on the server

    return serve_main(argv)


# -- shared pieces -----------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from engine.private import free_name, write_private_text
    from engine.sessions import SessionStore, SessionStoreError, export_markdown

    try:
        store = SessionStore(args.data_dir / "sessions.db" if args.data_dir is not None else None)
        session = store.session(args.session) if args.session is not None else store.last_session()
    except SessionStoreError as exc:
        raise UsageError(str(exc)) from exc
    if session is None:
        raise UsageError(f"no sessions in {store.path}; run blockpool-tui first")
    agents = store.agents(session.id, include_closed=True)
    chosen = [a for a in agents if args.agent is None or a.name == args.agent]
    if not chosen:
        names = ", ".join(repr(a.name) for a in agents) or "none"
        raise UsageError(f"no agent {args.agent!r} in session {session.id} (agents: {names})")
    text = "\n".join(export_markdown(store, agent) for agent in chosen)
    if args.out is None:
        print(text, end="")
        return 0
    # Never over an existing file unless told: a free name instead (-2, -3, ...).
    out = args.out if args.force else free_name(args.out)
    try:
        write_private_text(out, text, overwrite=args.force)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc}") from exc
    print_artifacts([out])
    return 0


def load(name: str | None, dtype: str | None) -> tuple[Any, Any]:
    """Load a model; a bad name becomes a UsageError carrying the loader's message."""
    from engine import ModelLoadError, load_model

    try:
        return load_model(name, dtype=dtype)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from exc


@contextmanager
def telemetry_recorder(path: Path | None) -> Iterator[Any]:
    """A Recorder writing a JSON Lines log to ``path`` while the block runs; None without a path."""
    if path is None:
        yield None
        return
    from telemetry import JsonlWriter, Recorder

    recorder = Recorder()
    try:
        writer = JsonlWriter(path).attach(recorder)
    except OSError as exc:
        raise UsageError(str(exc)) from exc
    try:
        yield recorder
    finally:
        writer.close()
        print(f"telemetry log: {path}")


def print_artifacts(paths: Sequence[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


# -- parser ------------------------------------------------------------------------


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
                        "(default: the embedded SmolLM2-135M-Instruct)")
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


def _module_main() -> int:
    """``python -m engine.cli``: a re-exec must restart the module, not engine/cli.py as a script."""
    argv = sys.argv[1:]
    sys.argv = ["-m", "engine.cli", *argv]
    fastblas.reexec_if_needed()
    return main(argv)


if __name__ == "__main__":
    sys.exit(_module_main())
