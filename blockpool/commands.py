"""What each ``blockpool`` subcommand does (the parser is in ``blockpool.cli``).

Heavy imports (MLX, the lab package, the server) happen inside the command that needs them,
after ``blockpool.cli.main`` re-executed the process with the fast BLAS preloaded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.loading.paths import DEFAULT_MODEL_NAME

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


class UsageError(Exception):
    """A problem with what the user asked for (exit code 2, message on stderr)."""


def cmd_exp005(args: argparse.Namespace) -> int:
    from lab.exp005 import run_exp005

    model, tokenizer = load(args.model, args.dtype)
    name = args.model or f"embedded {DEFAULT_MODEL_NAME}"
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
    from server.cli import main as serve_main  # lazy: uvicorn and FastAPI only for `blockpool serve`

    return serve_main(argv)


def cmd_export(args: argparse.Namespace) -> int:
    from engine.private import free_name, write_private_text
    from frontend.session_export import export_markdown
    from frontend.sessions import SessionStore, SessionStoreError

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
