"""Restore from disk vs re-prefill: time to first token of a turn whose ~2,000-token context
was spilled to disk (issue 6), against re-prefilling that context from scratch.

restore = ``evict`` (spill) then ``submit(turn, cache=<AgentBlocks>)``: the spill file is
read back into blocks, gathered, and only the turn is prefilled. prefill = ``submit(history
+ turn, cache=None)``. Also reported: the restore step alone (file -> blocks) from telemetry.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import statistics
import tempfile
from pathlib import Path

from bench_warm import TURN, engine_ttft, history_ids
from common import base_parser, load, print_table, save
from engine import BlockPoolBatchEngine
from lab.report import fmt
from pool import BlockPool, ModelCacheSpec
from telemetry import Recorder


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=2000, help="context tokens to spill (default 2000)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    model, tokenizer = load(args.model)
    spec = ModelCacheSpec.from_model(model)
    recorder = Recorder()
    with tempfile.TemporaryDirectory(prefix="blockpool-bench-restore-") as spill_dir:
        engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, spec.blocks_for_context(8192)), spec,
                                      recorder=recorder, spill_dir=Path(spill_dir))
        history = history_ids(engine, args.history)
        turn = engine.encode(TURN)
        restore_s, prefill_s, file_ms, tokens = [], [], [], []
        for i in range(repeats):
            _, base = engine_ttft(engine, f"spilled{i}", history, None)
            assert engine.evict(f"spilled{i}")
            ttft, warm = engine_ttft(engine, f"spilled{i}", turn, base.blocks)
            restore_s.append(ttft)
            file_ms.append(recorder.events(kind="restore")[-1].ms)
            ttft, cold = engine_ttft(engine, f"cold{i}", history + turn, None)
            prefill_s.append(ttft)
            tokens.append((warm.token_ids, cold.token_ids))
            engine.close_agent(f"spilled{i}")
            engine.close_agent(f"cold{i}")
    restore, prefill = statistics.median(restore_s), statistics.median(prefill_s)
    print_table(
        f"time to first token, {len(history)}-token context + {len(turn)}-token turn, median of {repeats}",
        ("path", "TTFT s", "of which file->blocks ms"),
        [("restore from disk", fmt(restore, 3), fmt(statistics.median(file_ms), 1)),
         ("re-prefill", fmt(prefill, 3), "-")],
    )
    ratio = prefill / restore
    print(f"\nre-prefill / restore = {ratio:.1f}x; same first token: {all(a == b for a, b in tokens)}")
    save("bench_restore", args.out,
         params={"history_tokens": len(history), "turn_tokens": len(turn), "repeats": repeats},
         headline={"restore_ttft_s": restore, "prefill_ttft_s": prefill, "ratio": ratio,
                   "restore_file_to_blocks_ms": statistics.median(file_ms)},
         data={"restore_ttft_s": restore_s, "prefill_ttft_s": prefill_s, "file_to_blocks_ms": file_ms})


if __name__ == "__main__":
    main()
