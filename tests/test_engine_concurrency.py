"""Agents batched together produce the same text as each run alone."""

from __future__ import annotations

from engine import BlockPoolBatchEngine
from pool import BlockPool

from .reference import assert_blocks_accounted, run_alone

MAX_TOKENS = 16
PROMPTS = {
    "short": "The quick brown fox",
    "medium": "Write a story about a robot who learns to paint. " * 12,
    "question": "What is the capital of France? Explain why it became the capital.",
}
FIRST_TURN = "Name three colours of the rainbow."
# A continuation that generates (the first one tried ended at once with EOS, as in mlx_lm.generate).
SECOND_TURN = " Then name two more colours of the rainbow, one per line:\n"


def test_concurrent_agents_match_solo_runs(default_model, default_spec):
    model, tokenizer = default_model
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, total_blocks=600), default_spec)

    solo = {agent: run_alone(engine, f"solo-{agent}", prompt, MAX_TOKENS).text for agent, prompt in PROMPTS.items()}
    first = run_alone(engine, "solo-cont", FIRST_TURN, MAX_TOKENS)
    solo["cont"] = run_alone(engine, "solo-cont", SECOND_TURN, MAX_TOKENS, cache=first.blocks).text

    # The same work, submitted together: three fresh agents and one continuing its context.
    first = run_alone(engine, "cont", FIRST_TURN, MAX_TOKENS)
    assert first.text == run_alone(engine, "check", FIRST_TURN, MAX_TOKENS).text
    uids = {engine.submit(agent, prompt, None, max_tokens=MAX_TOKENS): agent for agent, prompt in PROMPTS.items()}
    uids[engine.submit("cont", SECOND_TURN, first.blocks, max_tokens=MAX_TOKENS)] = "cont"
    batched = {}
    max_batch = 0
    while engine.has_work():
        out = engine.step_once()
        max_batch = max(max_batch, out.batch_size)
        for completion in out.completions:
            assert completion.finish_reason in ("stop", "length"), completion.error
            batched[uids[completion.uid]] = completion.text
            assert_blocks_accounted(engine, engine.pool.agent_ids())

    assert max_batch == 4
    identical = sorted(agent for agent in solo if solo[agent] == batched[agent])
    print(f"\nconcurrency: {len(identical)}/{len(solo)} byte-identical to solo runs: {identical}")
    assert batched == solo
