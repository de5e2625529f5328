"""Decode step time with and without a subscribed telemetry Recorder, same run (overhead %).

Two engines share one model: one with no recorder (the default NullRecorder), one with a
``Recorder`` that has a subscriber (a counter; ``--jsonl`` adds a JSON Lines writer). Both
run the same batch of agents, alternating, and every pure decode step (no prefill chunk,
full batch) is timed by the engine's own ``StepOutput.ms``. The isolated cost of one
``publish`` is measured as well, since step-to-step noise here dwarfs a few microseconds.
"""

from __future__ import annotations

import _blas  # noqa: F401  # isort: skip  (OpenBLAS before MLX)

import statistics
import tempfile
import time
from pathlib import Path

from common import PROMPTS, base_parser, load, print_table, save
from engine import BlockPoolBatchEngine
from lab.report import fmt
from pool import BlockPool, ModelCacheSpec
from telemetry import JsonlWriter, Recorder, latency_stats
from telemetry.events import EngineStep


class EventCounter:
    """A subscriber that only counts what it receives."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: object) -> None:
        self.count += 1


def decode_steps_ms(engine: BlockPoolBatchEngine, prompts: list[str], max_tokens: int) -> list[float]:
    """Run the prompts together; the engine-measured ms of each full-batch, decode-only step."""
    for i, prompt in enumerate(prompts):
        engine.submit(f"agent-{i}", prompt, None, max_tokens=max_tokens)
    samples = []
    while engine.has_work():
        out = engine.step_once()
        if out.prefill_tokens == 0 and out.batch_size == len(prompts) and len(out.deltas) == len(prompts):
            samples.append(out.ms)
    return samples


def publish_cost_us(recorder: Recorder, count: int = 20_000) -> float:
    """Microseconds per ``publish`` of an EngineStep event (what every step adds)."""
    tic = time.perf_counter()
    for _ in range(count):
        recorder.publish(EngineStep(batch_size=4, tokens_generated=4, prefill_tokens=0, ms=20.0, queued=0))
    return (time.perf_counter() - tic) / count * 1e6


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per variant")
    parser.add_argument("--jsonl", action="store_true", help="also write events to a JSON Lines file")
    args = parser.parse_args()
    rounds, max_tokens = (2, 24) if args.quick else (args.rounds, args.max_tokens)
    model, tokenizer = load(args.model)
    spec = ModelCacheSpec.from_model(model)
    num_blocks = spec.blocks_for_context(512) * args.agents
    received = EventCounter()
    recorder = Recorder()
    recorder.subscribe(received)
    tmp = tempfile.TemporaryDirectory()
    writer = JsonlWriter(Path(tmp.name) / "events.jsonl").attach(recorder) if args.jsonl else None
    engines = {"off": BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, num_blocks), spec),
               "on": BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, num_blocks), spec, recorder=recorder)}
    prompts = list(PROMPTS[: args.agents])
    for engine in engines.values():
        decode_steps_ms(engine, prompts, 4)  # warm-up, untimed
    samples: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(rounds):
        for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
            samples[name].extend(decode_steps_ms(engines[name], prompts, max_tokens))
    if writer is not None:
        writer.close()
    stats = {name: latency_stats(v) for name, v in samples.items()}
    p50_overhead = (stats["on"].p50 / stats["off"].p50 - 1) * 100
    mean_overhead = (stats["on"].mean / stats["off"].mean - 1) * 100
    isolated = Recorder()
    isolated.subscribe(EventCounter())
    publish_us = publish_cost_us(isolated)
    rows = [(name, s.count, fmt(s.p50), fmt(s.p95), fmt(s.mean), fmt(s.std)) for name, s in stats.items()]
    print_table(f"decode step ms, {args.agents} agents, {rounds} alternating rounds of {max_tokens} tokens",
                ("telemetry", "steps", "p50", "p95", "mean", "std"), rows)
    print(f"overhead: p50 {p50_overhead:+.2f}%, mean {mean_overhead:+.2f}%; events received {received.count}; "
          f"one publish to a subscribed Recorder {publish_us:.1f} us = "
          f"{publish_us / 1000 / stats['off'].p50 * 100:.3f}% of a step")
    save("bench_telemetry", args.out,
         params={"agents": args.agents, "max_tokens": max_tokens, "rounds": rounds, "jsonl": args.jsonl},
         headline={"metric": "decode step time overhead with a subscribed Recorder (p50, %)", "value": p50_overhead,
                   "mean_overhead_pct": mean_overhead, "publish_us": publish_us, "goal": "negligible"},
         data={"step_ms": samples, "events_received": received.count})
    tmp.cleanup()


if __name__ == "__main__":
    main()
