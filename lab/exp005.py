"""EXP-005: the engine's output is byte-identical to ``mlx_lm.generate`` (the seed's procedure).

References come live from ``mlx_lm.generate`` (timed), then the engine runs the same
prompts through ``submit``/``step`` (timed) on a pool of 100 blocks. On a mismatch the
first divergent token is found from ``mlx_lm.stream_generate`` (the function
``generate`` wraps), as the seed's "If EXP-005 FAILS" section asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm import generate, stream_generate

from engine import BlockPoolBatchEngine, Completion
from pool import BlockPool, ModelCacheSpec
from telemetry import Recorder

from .exp005_report import write_artifacts
from .exp005_results import Divergence, Exp005Result, LeakCheck, PromptResult
from .report import machine_info

SEED_PROMPTS: tuple[tuple[str, str], ...] = (
    ("short", "The quick brown fox"),
    ("medium", "Write a story about a robot"),
    ("long", "Explain quantum computing in detail"),
)
SEED = 42
POOL_BLOCKS = 100
AGENT_ID = "test_agent"
LEAK_RUNS = 10

Progress = Callable[[str], None]


def generate_reference(model: Any, tokenizer: Any, prompt: str, max_tokens: int) -> tuple[str, float]:
    """``mlx_lm.generate`` greedy text and its wall time (mlx-lm 0.32 takes no ``temp``: greedy is its default)."""
    tic = time.perf_counter()
    text = generate(model, tokenizer, prompt=prompt, max_tokens=max_tokens, verbose=False)
    return text, time.perf_counter() - tic


def generate_test(engine: BlockPoolBatchEngine, prompt: str, max_tokens: int) -> tuple[Completion, float]:
    """The seed's ``generate_test``: submit, then poll ``step()`` for the completion; timed."""
    tic = time.perf_counter()
    uid = engine.submit(agent_id=AGENT_ID, prompt=prompt, cache=None, max_tokens=max_tokens)
    for completion in engine.step():
        if completion.uid == uid:
            return completion, time.perf_counter() - tic
    raise RuntimeError(f"Generation {uid} did not complete")


def reference_token_ids(model: Any, tokenizer: Any, prompt: str, max_tokens: int) -> list[int]:
    """The reference's token ids (EOS included when it stopped on one)."""
    return [r.token for r in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens)]


def first_divergence(
    expected_text: str, actual_text: str, expected_ids: Sequence[int], actual_ids: Sequence[int], tokenizer: Any
) -> Divergence | None:
    """The first differing token (and character); None when the texts are identical."""
    if expected_text == actual_text:
        return None
    char_index = next((i for i, (a, b) in enumerate(zip(expected_text, actual_text)) if a != b),
                      min(len(expected_text), len(actual_text)))
    index = next((i for i, (a, b) in enumerate(zip(expected_ids, actual_ids)) if a != b), None)
    if index is None:
        if len(expected_ids) == len(actual_ids):
            return Divergence(char_index)
        index = min(len(expected_ids), len(actual_ids))

    def token(ids: Sequence[int]) -> tuple[int | None, str | None]:
        return (ids[index], tokenizer.decode([ids[index]])) if index < len(ids) else (None, None)

    (expected_id, expected_tok), (actual_id, actual_tok) = token(expected_ids), token(actual_ids)
    return Divergence(char_index, index, expected_id, expected_tok, actual_id, actual_tok)


def run_engine_prompt(engine: BlockPoolBatchEngine, tokenizer: Any, result: PromptResult) -> None:
    """Fill ``result`` with the engine's run of its prompt; exceptions become its error."""
    result.prompt_tokens = len(tokenizer.encode(result.prompt))
    try:
        completion, result.engine_s = generate_test(engine, result.prompt, result.max_tokens)
    except Exception as exc:  # the seed counts any exception as a failed criterion
        result.error = f"{type(exc).__name__}: {exc}"
        return
    result.actual = completion.text
    result.token_count = completion.token_count
    result.finish_reason = completion.finish_reason
    result.error = completion.error
    result.token_ids = list(completion.token_ids)


def warm_up(model: Any, tokenizer: Any, engine: BlockPoolBatchEngine) -> None:
    """One short untimed run of each side, so neither timing pays first-call costs."""
    generate(model, tokenizer, prompt="Hello", max_tokens=2, verbose=False)
    uid = engine.submit(agent_id="warm_up", prompt="Hello", cache=None, max_tokens=2)
    for completion in engine.step():
        assert completion.uid == uid, completion
    engine.close_agent("warm_up")  # frees its blocks: the leak check starts from an empty pool


def leak_check(engine: BlockPoolBatchEngine, prompt: str, max_tokens: int, runs: int = LEAK_RUNS) -> LeakCheck:
    """The seed's check: ``runs`` generations each followed by ``free_agent_blocks``."""
    pool = engine.pool
    pool.free_agent_blocks(AGENT_ID)
    initial = peak = pool.used_blocks()
    errors = 0
    for _ in range(runs):
        try:
            completion, _ = generate_test(engine, prompt, max_tokens)
            errors += completion.finish_reason not in ("stop", "length")
        except Exception:  # counted, and the loop goes on to show whether blocks leak
            errors += 1
        peak = max(peak, pool.used_blocks())
        pool.free_agent_blocks(AGENT_ID)
    return LeakCheck(runs, initial, peak, pool.used_blocks(), errors)


def run_exp005(
    model: Any,
    tokenizer: Any,
    *,
    out_dir: Path,
    model_name: str,
    max_tokens: int = 100,
    leak_runs: int = LEAK_RUNS,
    recorder: Recorder | None = None,
    kv_bits: int = 16,
    prompts: Sequence[tuple[str, str]] | None = None,
    progress: Progress = print,
) -> Exp005Result:
    """Run EXP-005 on a loaded model and write its artifacts into ``out_dir``.

    ``prompts`` defaults to the seed's three (label, prompt) pairs.
    """
    prompts = SEED_PROMPTS if prompts is None else prompts
    mx.random.seed(SEED)
    spec = ModelCacheSpec.from_model(model, kv_bits=kv_bits)  # one turn per prompt: float K/V throughout
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, total_blocks=POOL_BLOCKS), spec,
                                  recorder=recorder)
    warm_up(model, tokenizer, engine)
    results = []
    for label, prompt in prompts:
        text, seconds = generate_reference(model, tokenizer, prompt, max_tokens)
        progress(f"  reference {label:<6} {seconds:6.2f} s  ({len(text)} chars, mlx_lm.generate)")
        results.append(PromptResult(label, prompt, max_tokens, text, seconds))
    for result in results:
        run_engine_prompt(engine, tokenizer, result)
        verdict = "identical" if result.match else "MISMATCH"
        progress(f"  engine    {result.label:<6} {result.engine_s:6.2f} s  {verdict}, "
                 f"{result.generated_tokens} tokens, {result.finish_reason}")
        if not result.match and result.error is None:
            expected_ids = reference_token_ids(model, tokenizer, result.prompt, max_tokens)
            result.divergence = first_divergence(
                result.reference, result.actual, expected_ids, result.token_ids, tokenizer
            )
            progress(f"    {result.divergence.describe() if result.divergence else ''}")
    leak = leak_check(engine, prompts[0][1], max_tokens, leak_runs)
    progress(f"  leak check: {leak.runs} runs, used blocks {leak.initial_used} -> {leak.final_used} "
             f"(peak {leak.peak_used})")
    outcome = Exp005Result(model_name, spec, max_tokens, results, leak, machine_info())
    outcome.artifacts = write_artifacts(outcome, out_dir)
    return outcome
