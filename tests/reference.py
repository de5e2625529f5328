"""mlx-lm's own generation: the ground truth the engine must match byte for byte."""

from __future__ import annotations

from collections.abc import Sequence

from mlx_lm import generate
from mlx_lm.models.cache import make_prompt_cache

from engine import BlockPoolBatchEngine, Completion


def reference(model, tokenizer, prompt: str | list[int], max_tokens: int, prompt_cache=None) -> str:
    """``mlx_lm.generate`` greedy text (a live reference, never stored by hand)."""
    return generate(model, tokenizer, prompt=prompt, max_tokens=max_tokens, prompt_cache=prompt_cache)


def reference_turns(model, tokenizer, turns: Sequence[str | list[int]], max_tokens: int) -> list[str]:
    """One conversation through mlx-lm with a single persistent prompt cache.

    Later turns continue the context, so their text gets no special tokens: a tokenizer
    that adds ``<bos>`` (Gemma) must not put a second one in the middle (issue 10).
    """
    cache = make_prompt_cache(model)
    ids = [turn if i == 0 or not isinstance(turn, str) else tokenizer.encode(turn, add_special_tokens=False)
           for i, turn in enumerate(turns)]
    return [reference(model, tokenizer, turn, max_tokens, cache) for turn in ids]


def run_alone(engine: BlockPoolBatchEngine, agent_id: str, prompt, max_tokens: int, cache=None) -> Completion:
    """Submit one request and step the engine until it completes."""
    uid = engine.submit(agent_id, prompt, cache, max_tokens=max_tokens)
    done = {c.uid: c for c in engine.step()}
    return done[uid]


def assert_blocks_accounted(engine: BlockPoolBatchEngine, agent_ids: Sequence[str]) -> None:
    """The pool's used blocks are exactly the blocks the agents hold (a shared block once),
    plus those that unfinished turns reserved for tokens still in mlx-lm's batch cache."""
    contexts = [engine.agent_blocks(a) for a in agent_ids]
    held = len({b.block_id for agent in contexts if agent for b in agent.all_blocks()})
    reserved = engine.reserved_blocks()
    assert engine.pool.used_blocks() == held + reserved, (engine.pool.used_blocks(), held, reserved)
    engine.pool.check_invariants()
