"""A seeded request samples from its own key: its text depends on its seed, not on who shares the batch."""

from __future__ import annotations

import mlx.core as mx
import pytest

from engine import BlockPoolBatchEngine
from engine.sampling import SeededSampler, request_sampler
from pool import BlockPool

MAX_TOKENS = 24
PROMPTS = {"cat": "Invent a name for a cat and say why:", "ship": "Describe a ship in one sentence:"}
SAMPLING = {"temperature": 1.0, "top_p": 0.95}


@pytest.fixture
def engine(default_model, default_spec):
    model, tokenizer = default_model
    return BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, total_blocks=300), default_spec)


def run(engine: BlockPoolBatchEngine, requests: dict[str, tuple[str, int | None]]) -> dict[str, str]:
    """Submit every (prompt, seed) at once under its agent id and step until all finish: agent -> text."""
    uids = {engine.submit(agent, prompt, None, max_tokens=MAX_TOKENS, seed=seed, **SAMPLING): agent
            for agent, (prompt, seed) in requests.items()}
    texts = {}
    for completion in engine.step():
        assert completion.finish_reason in ("stop", "length"), completion.error
        texts[uids[completion.uid]] = completion.text
    return texts


def test_the_same_seed_gives_the_same_text_and_another_seed_another(engine) -> None:
    prompt = PROMPTS["cat"]
    first = run(engine, {"a": (prompt, 7)})["a"]
    mx.random.seed(12345)  # the global generator moves; a seeded request does not use it
    assert run(engine, {"b": (prompt, 7)})["b"] == first
    assert run(engine, {"c": (prompt, 8)})["c"] != first


def test_concurrent_seeded_requests_give_the_texts_each_gives_alone(engine) -> None:
    alone = {agent: run(engine, {f"alone-{agent}": (prompt, 11 + i)})[f"alone-{agent}"]
             for i, (agent, prompt) in enumerate(PROMPTS.items())}
    together = run(engine, {agent: (prompt, 11 + i) for i, (agent, prompt) in enumerate(PROMPTS.items())})
    assert together == alone


def test_an_unseeded_sampling_request_beside_it_does_not_move_a_seeded_one(engine) -> None:
    alone = run(engine, {"seeded": (PROMPTS["cat"], 3)})["seeded"]
    together = run(engine, {"seeded2": (PROMPTS["cat"], 3), "random": (PROMPTS["ship"], None)})
    assert together["seeded2"] == alone


def test_a_continued_turn_samples_its_first_token_from_its_seed(engine) -> None:
    """A continued turn reads a short prompt and samples its first token in one pass (``first_token``)."""
    texts = []
    for agent in ("x", "y"):
        first = engine.submit(agent, PROMPTS["ship"], None, max_tokens=8)
        blocks = next(c for c in engine.step() if c.uid == first).blocks
        uid = engine.submit(agent, " And another:", blocks, max_tokens=MAX_TOKENS, seed=5, **SAMPLING)
        texts.append(next(c for c in engine.step() if c.uid == uid).text)
    assert texts[0] == texts[1] and texts[0]


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_a_seed_the_key_cannot_take_is_refused_by_name(engine, seed) -> None:
    with pytest.raises(ValueError, match=r"seed must be an int with 0 <= seed < 2\*\*64"):
        engine.submit("bad", "Hi", None, max_tokens=2, seed=seed, temperature=1.0)
    assert not engine.has_work() and engine.pool.used_blocks() == 0  # nothing was queued or reserved


def test_greedy_needs_no_sampler_and_top_p_cuts_the_tail() -> None:
    assert request_sampler(0.0, 1.0, 7) is None
    logprobs = mx.log(mx.array([[0.9, 0.09, 0.01]]))
    draws = SeededSampler(1.0, 0.5, 0)
    assert {int(draws(logprobs).item()) for _ in range(50)} == {0}  # top_p 0.5 keeps the one likely token
    wide = SeededSampler(1.0, 1.0, 0)
    assert len({int(wide(logprobs).item()) for _ in range(200)}) > 1  # the key moves on every draw
