"""Issue 10 at the engine API: a context is only continued from its own K/V, caches
survive ``close()``, what the context keeps is what was reported, nothing outlives the engine."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import mlx.core as mx

from engine import BlockPoolBatchEngine
from pool import BlockPool
from telemetry import Recorder

from .reference import reference, run_alone

MAX_TOKENS = 8
HISTORY = "Write a short poem about the sea."
OTHER = "List three facts about volcanoes."
TURN = " Now say it again in French."
STORY = "Once upon a time, in a small village by the sea,"


def make_engine(default_model, spec, spill_dir=None, recorder=None, **kwargs) -> BlockPoolBatchEngine:
    model, tokenizer = default_model
    return BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, total_blocks=200), spec,
                                spill_dir=spill_dir, recorder=recorder, **kwargs)


def turn_ids(default_model) -> list[int]:
    return list(default_model[1].encode(TURN, add_special_tokens=False))


def test_adopt_never_continues_from_a_stale_file_of_another_context(default_model, default_spec, tmp_path):
    first = make_engine(default_model, default_spec, tmp_path)
    stale = run_alone(first, "a", HISTORY, MAX_TOKENS)
    assert first.evict("a")  # the folder now holds a file for "a" with HISTORY's context
    other_ids = run_alone(first, "b", OTHER, MAX_TOKENS).blocks.token_ids
    assert stale.blocks.token_ids != other_ids

    recorder = Recorder()
    engine = make_engine(default_model, default_spec, tmp_path, recorder)
    adopted = engine.adopt("a", other_ids)
    done = run_alone(engine, "a", turn_ids(default_model), MAX_TOKENS, cache=adopted)
    model, tokenizer = default_model
    assert done.text == reference(model, tokenizer, other_ids + turn_ids(default_model), MAX_TOKENS)
    (restore,) = recorder.events(kind="restore")
    assert restore.source == "prefill" and "another context" in restore.error


def test_close_saves_resident_contexts_and_the_next_engine_restores_them(default_model, default_spec, tmp_path):
    with make_engine(default_model, default_spec, tmp_path) as engine:
        first = run_alone(engine, "a", HISTORY, MAX_TOKENS)
        context_ids = list(first.blocks.token_ids)
    assert engine.spill_usage().num_files == 1

    recorder = Recorder()
    with make_engine(default_model, default_spec, tmp_path, recorder) as again:
        done = run_alone(again, "a", turn_ids(default_model), MAX_TOKENS, cache=again.adopt("a", context_ids))
    (restore,) = recorder.events(kind="restore")
    assert (restore.source, restore.num_tokens, restore.error) == ("disk", len(context_ids), None)
    model, tokenizer = default_model
    assert done.text == reference(model, tokenizer, context_ids + turn_ids(default_model), MAX_TOKENS)


def test_the_spill_budget_drops_the_least_recently_used_files(default_model, default_spec, tmp_path):
    probe = make_engine(default_model, default_spec, tmp_path / "probe")
    run_alone(probe, "x", HISTORY, MAX_TOKENS)
    probe.close()
    one_file = probe.spill_usage().num_bytes
    engine = make_engine(default_model, default_spec, tmp_path / "budget", spill_budget_bytes=int(one_file * 1.5))
    run_alone(engine, "old", HISTORY, MAX_TOKENS)
    run_alone(engine, "new", HISTORY, MAX_TOKENS)
    assert engine.close() == {}
    assert sorted(p.stem for p in (tmp_path / "budget").glob("*.safetensors")) == ["new"]
    assert engine.spill_usage().num_bytes <= int(one_file * 1.5)


def test_a_context_too_big_for_the_budget_is_reported_not_saved(default_model, default_spec, tmp_path):
    engine = make_engine(default_model, default_spec, tmp_path, spill_budget_bytes=1000)
    run_alone(engine, "a", HISTORY, MAX_TOKENS)
    assert not engine.evict("a")  # the agent stays resident: nothing lost
    assert engine.agent_blocks("a").num_blocks() > 0
    errors = engine.close()
    assert "does not fit the spill budget of 1000 bytes" in errors["a"]
    assert engine.spill_usage().num_files == 0


def test_stop_string_keeps_only_the_reported_reply_in_the_context(default_model, default_spec):
    model, tokenizer = default_model
    engine = make_engine(default_model, default_spec)
    full = run_alone(engine, "probe", STORY, 24)
    prompt_ids = full.blocks.token_ids[: full.prompt_tokens]
    reply_ids = full.token_ids
    texts = [streamed(tokenizer, reply_ids[:n]) for n in range(len(reply_ids) + 1)]
    # A stop string that begins on a token boundary and nowhere earlier in the reply.
    cut = next(n for n in range(4, len(reply_ids) - 3) if full.text.find(texts[n + 3][len(texts[n]):]) == len(texts[n]))
    stop = texts[cut + 3][len(texts[cut]):]

    uid = engine.submit("a", STORY, max_tokens=24, stop=[stop])
    (done,) = [c for c in engine.step() if c.uid == uid]
    assert (done.finish_reason, done.text) == ("stop", full.text[: len(texts[cut])])
    assert done.blocks.token_ids == prompt_ids + reply_ids[:cut]
    assert done.blocks.total_tokens == len(prompt_ids) + cut
    follow = run_alone(engine, "a", turn_ids(default_model), MAX_TOKENS, cache=done.blocks)
    assert follow.text == reference(model, tokenizer, done.blocks.token_ids + turn_ids(default_model), MAX_TOKENS)


def streamed(tokenizer, token_ids: list[int]) -> str:
    """The text a reply of ``token_ids`` streams (a fresh detokenizer, as the engine uses)."""
    detokenizer = tokenizer.detokenizer
    for token in token_ids:
        detokenizer.add_token(token)
    detokenizer.finalize()
    return detokenizer.text


def test_close_removes_the_temp_spill_folder_and_restores_the_cache_limit(default_model, default_spec):
    before = 123 << 20
    previous = mx.set_cache_limit(before)
    try:
        with make_engine(default_model, default_spec) as engine:
            run_alone(engine, "a", HISTORY, MAX_TOKENS)
            assert engine.evict("a")
            folder = engine.spill_usage().folder
            assert folder.is_dir() and oct(folder.stat().st_mode & 0o777) == "0o700"
            assert folder.name.startswith(f"blockpool-spill-{os.getpid()}-")
        assert not folder.exists()
        assert mx.set_cache_limit(before) == before
    finally:
        mx.set_cache_limit(previous)


def test_an_engine_never_closed_leaves_no_folder_and_stale_ones_are_swept(default_model, default_spec):
    engine = make_engine(default_model, default_spec)
    folder = engine.spill_usage().folder
    del engine  # collected without close(): the finalizer removes the folder
    assert not folder.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tempfile.mkdtemp(prefix=f"blockpool-spill-{int(dead.stdout)}-")
    make_engine(default_model, default_spec).close()
    assert not os.path.exists(stale)
