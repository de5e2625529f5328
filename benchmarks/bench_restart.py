"""First turn after a restart: a ~2,000-token context restored from the spill file that
``close()`` saved (issue 10), against re-prefilling it as a resumed session did before.

Each repeat: engine 1 builds the context and is closed (it saves the context). Engine 2,
a new one on the same spill folder, adopts the context and runs one turn: restored.
Engine 3, a new one on an empty folder, adopts the same ids and runs the same turn:
re-prefilled. Time to first token of that turn, median of the repeats; the machine's
load (``os.getloadavg``, as ``uptime`` shows it) before and after, since the CPU is shared.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench_warm import TURN, engine_ttft, history_ids
from common import base_parser, load, print_table, save
from engine import BlockPoolBatchEngine
from lab.report import fmt
from pool import BlockPool, ModelCacheSpec
from telemetry import Recorder


def new_engine(model: Any, tokenizer: Any, spec: ModelCacheSpec, spill_dir: Path,
               recorder: Recorder | None = None) -> BlockPoolBatchEngine:
    pool = BlockPool(spec, spec.blocks_for_context(8192))
    return BlockPoolBatchEngine(model, tokenizer, pool, spec, recorder=recorder, spill_dir=spill_dir)


def first_turn_after_restart(model: Any, tokenizer: Any, spec: ModelCacheSpec, spill_dir: Path,
                             context: list[int], turn: list[int]) -> tuple[float, str, list[int]]:
    """(TTFT s, where the context came from, first token) of one turn on a fresh engine."""
    recorder = Recorder()
    with new_engine(model, tokenizer, spec, spill_dir, recorder) as engine:
        ttft, done = engine_ttft(engine, "agent", turn, engine.adopt("agent", context))
    (restore,) = recorder.events(kind="restore")
    return ttft, restore.source, done.token_ids


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=2000, help="context tokens (default 2000)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    model, tokenizer = load(args.model)
    spec = ModelCacheSpec.from_model(model)
    load_before = os.getloadavg()
    restored_s, prefill_s, same = [], [], []
    with tempfile.TemporaryDirectory(prefix="blockpool-bench-restart-") as root:
        for i in range(repeats):
            saved, empty = Path(root) / f"saved{i}", Path(root) / f"empty{i}"
            with new_engine(model, tokenizer, spec, saved) as engine:
                history = history_ids(engine, args.history)
                turn = engine.encode(TURN, continues=True)
                _, base = engine_ttft(engine, "agent", history, None)
                context = list(base.blocks.token_ids)
            ttft, source, warm = first_turn_after_restart(model, tokenizer, spec, saved, context, turn)
            assert source == "disk", f"expected a restore from the saved file, got {source}"
            restored_s.append(ttft)
            ttft, source, cold = first_turn_after_restart(model, tokenizer, spec, empty, context, turn)
            assert source == "prefill", source
            prefill_s.append(ttft)
            same.append(warm == cold)
    load_after = os.getloadavg()
    restored, prefill = statistics.median(restored_s), statistics.median(prefill_s)
    print_table(
        f"first turn after a restart: {len(context)}-token context + {len(turn)}-token turn, median of {repeats}",
        ("path", "TTFT s"),
        [("restored from the file saved on close()", fmt(restored, 3)), ("re-prefilled", fmt(prefill, 3))],
    )
    ratio = prefill / restored
    print(f"\nre-prefill / restored = {ratio:.1f}x; same first token: {all(same)}")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    save("bench_restart", args.out,
         params={"context_tokens": len(context), "turn_tokens": len(turn), "repeats": repeats},
         headline={"restored_ttft_s": restored, "prefill_ttft_s": prefill, "ratio": ratio,
                   "same_first_token": all(same), "loadavg_before": load_before, "loadavg_after": load_after},
         data={"restored_ttft_s": restored_s, "prefill_ttft_s": prefill_s})


if __name__ == "__main__":
    main()
