"""``blockpool demo``: a few agents decoded together, two turns each, printed as they stream.

The second turn of every agent continues from the blocks of its first (``cache=
completion.blocks``), so only its new tokens are prefilled: the "cached" column shows it.
"""

from __future__ import annotations

from typing import Any

from engine import BlockPoolBatchEngine, Completion
from pool import BlockPool, ModelCacheSpec
from telemetry import Recorder

from .report import fmt, text_table

OPENINGS = (
    "Once upon a time, a small robot woke up in an empty library and",
    "The three most useful ideas in computer science are",
    "A recipe for pancakes:\n1.",
    "Dear diary, today the weather on Mars was",
    "The best way to learn a new language is",
    "In the year 2300, cities under the sea",
)
FOLLOW_UP = "\n\nTo sum it up in one sentence:"
CONTEXT_ROOM_TOKENS = 1024  # each agent may grow to this many tokens


def run_demo(model: Any, tokenizer: Any, *, num_agents: int = 3, max_tokens: int = 40,
             recorder: Recorder | None = None, kv_bits: int = 16) -> list[Completion]:
    """Two turns for ``num_agents`` agents; returns the second turn's completions."""
    spec = ModelCacheSpec.from_model(model, kv_bits=kv_bits)
    pool = BlockPool(spec, spec.blocks_for_context(CONTEXT_ROOM_TOKENS) * num_agents)
    engine = BlockPoolBatchEngine(model, tokenizer, pool, spec, recorder=recorder)
    print(f"pool: {pool.total_blocks} blocks, each {spec.block_tokens} tokens of one layer's K/V "
          f"({spec.n_layers} layers; {pool.total_bytes() / 2**20:.1f} MiB of {spec.kv_format} blocks)")
    agent_ids = [f"agent-{i + 1}" for i in range(num_agents)]
    prompts = {a: OPENINGS[i % len(OPENINGS)] for i, a in enumerate(agent_ids)}
    first = run_turn(engine, {a: (prompts[a], None) for a in agent_ids}, max_tokens, "turn 1")
    follow = {a: (FOLLOW_UP, first[a].blocks) for a in agent_ids if first[a].finish_reason != "error"}
    second = run_turn(engine, follow, max_tokens, "turn 2 (continues each agent's blocks)")
    for agent_id in agent_ids:
        print(f"\n[{agent_id}] {prompts[agent_id]!r}\n  -> {first[agent_id].text!r}")
        if agent_id in second:
            print(f"  {FOLLOW_UP!r}\n  -> {second[agent_id].text!r}")
    print(f"\npool after the demo: {pool.used_blocks()}/{pool.total_blocks} blocks used, per agent "
          f"{pool.agent_usage()}")
    return list(second.values())


def run_turn(engine: BlockPoolBatchEngine, turns: dict[str, tuple[str, Any]], max_tokens: int,
             title: str) -> dict[str, Completion]:
    """Submit every agent's turn together and stream the engine's steps until all finish."""
    print(f"\n== {title}")
    uids = {engine.submit(a, prompt, cache, max_tokens=max_tokens): a for a, (prompt, cache) in turns.items()}
    done: dict[str, Completion] = {}
    step = 0
    while engine.has_work():
        out = engine.step_once()
        step += 1
        if out.deltas:
            pieces = "  ".join(f"{d.agent_id}:{d.text!r}" for d in out.deltas)
            print(f"step {step:>3} | pool {engine.pool.used_blocks():>4}/{engine.pool.total_blocks} | {pieces}")
        for completion in out.completions:
            done[uids[completion.uid]] = completion
    print(completions_table(done))
    return done


def completions_table(done: dict[str, Completion]) -> str:
    rows = [(a, c.finish_reason, c.prompt_tokens, c.cached_tokens, c.generated_tokens,
             fmt(None if c.ttft_s is None else c.ttft_s * 1000, 0), fmt(c.decode_tok_s, 1), c.blocks.num_blocks(),
             c.error or "") for a, c in sorted(done.items())]
    return text_table(("agent", "finish", "prompt", "cached", "generated", "ttft ms", "tok/s", "blocks", "error"), rows)
