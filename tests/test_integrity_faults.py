"""Faults tried for real (issue 10, item 8): SIGKILL in the middle of spill writes and SQLite
commits, and a disk that is really full (a small tmpfs, when the tests may mount one) or
reports itself full. Nothing half-written is ever used; nothing reports success that did not happen."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlx.core as mx
import pytest

from engine import BlockPoolBatchEngine
from frontend.sessions import SessionStore, SessionStoreError
from engine.kv.spill import SpillStore, model_key
from pool import BlockPool

from .reference import reference, run_alone

ROOT = Path(__file__).resolve().parents[1]
HISTORY_IDS = [300 + (i * 13) % 5000 for i in range(400)]

SPILL_LOOP = textwrap.dedent(
    """
    import sys, time
    import mlx.core as mx
    from engine import BlockPoolBatchEngine, load_model
    from pool import BlockPool, ModelCacheSpec

    if sys.argv[2] == "pause":  # the second write stops after its bytes, before its rename
        real_save, calls = mx.save_safetensors, []

        def save_then_pause(*args, **kwargs):
            real_save(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                print("WRITTEN", 1, flush=True)
                time.sleep(60)

        mx.save_safetensors = save_then_pause
    model, tokenizer = load_model()
    spec = ModelCacheSpec.from_model(model)
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, 200), spec, spill_dir=sys.argv[1])
    ids = [300 + (i * 13) % 5000 for i in range(400)]
    engine.submit("a", ids, max_tokens=1)
    (done,) = list(engine.step())
    for n in range(10_000):
        print("WRITING", n, flush=True)
        assert engine.evict("a")
        engine.submit("a", [400 + n % 50], done.blocks, max_tokens=1)  # restores, then writes back
        (done,) = list(engine.step())
    """
)

COMMIT_LOOP = textwrap.dedent(
    """
    import sys
    from frontend.sessions import SessionStore

    store = SessionStore(sys.argv[1])
    agent = store.add_agent(store.new_session("m"), "alice")
    for n in range(100_000):
        reply = store.begin_turn(agent, f"question {n}")
        store.finish_turn(reply, f"answer {n} " + "x" * 400_000, "complete", context_tokens=list(range(n, n + 5000)))
        print("DONE", n, flush=True)
    """
)


def kill_after(script: str, args: list[str], marker: str, min_lines: int, max_delay_s: float) -> int:
    """Run ``script``; SIGKILL it a random moment after its ``min_lines``-th marker line; returns
    the last number it printed after ``marker``."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        seen = -1
        while seen + 1 < min_lines:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            if line.startswith(marker):
                seen = int(line.split()[1])
        time.sleep(random.uniform(0.0, max_delay_s))
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = [int(line.split()[1]) for line in rest.splitlines() if line.startswith(marker)]
    return max([seen, *done])


@pytest.mark.parametrize("when", ["before-rename", "any-moment"])
def test_sigkill_during_spill_writes_leaves_no_half_file(default_model, default_spec, tmp_path, when):
    if when == "before-rename":  # deterministic: killed with a whole tmp file not yet renamed
        kill_after(SPILL_LOOP, [str(tmp_path), "pause"], "WRITTEN", min_lines=2, max_delay_s=0.0)
        assert list(tmp_path.glob(".*.tmp.safetensors"))
    else:  # wherever a random moment of the evict/restore loop lands
        kill_after(SPILL_LOOP, [str(tmp_path), "run"], "WRITING", min_lines=2, max_delay_s=0.4)
    model, tokenizer = default_model
    store = SpillStore(tmp_path, default_spec, model_key(model))
    finished = [p for p in tmp_path.glob("*.safetensors") if not p.name.startswith(".")]
    for path in finished:  # whatever carries the file's name is complete
        assert store.load(path.stem).token_ids[:400] == HISTORY_IDS
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, 200), default_spec, spill_dir=tmp_path)
    assert not list(tmp_path.glob(".*.tmp.safetensors"))  # the killed process's partial files are swept
    context = store.load("a").token_ids if finished else HISTORY_IDS
    done = run_alone(engine, "a", [7000], 4, cache=engine.adopt("a", context))
    assert done.text == reference(model, tokenizer, context + [7000], 4)


def test_sigkill_during_sqlite_commits_keeps_the_last_completed_turn(tmp_path):
    db = tmp_path / "sessions.db"
    last = kill_after(COMMIT_LOOP, [str(db)], "DONE", min_lines=3, max_delay_s=0.5)
    store = SessionStore(db)
    assert store.integrity_check() == "ok"
    messages = store.messages(1)
    replies = messages[1::2]
    assert replies[last].content.startswith(f"answer {last} ") and replies[last].status == "complete"
    assert all(r.status in ("complete", "interrupted") for r in replies)
    assert all(len(r.content) == len(f"answer {i} ") + 400_000 for i, r in enumerate(replies) if r.status == "complete")
    (agent,) = store.agents(1)
    completed = max(i for i, r in enumerate(replies) if r.status == "complete")
    assert agent.context_tokens == list(range(completed, completed + 5000))  # written with its reply


@pytest.fixture
def small_fs(tmp_path):
    """A real 8 MiB filesystem (tmpfs): smaller than one spill file of HISTORY_IDS."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the patched-writer test covers a full disk")
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def assert_full_disk_loses_nothing(default_model, default_spec, spill_dir: Path) -> None:
    model, tokenizer = default_model
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, 200), default_spec, spill_dir=spill_dir)
    first = run_alone(engine, "a", HISTORY_IDS, 2)
    assert not engine.evict("a")  # the write failed: the agent stays resident
    assert engine.agent_blocks("a").num_blocks() > 0 and engine.spilled_agents() == set()
    assert not [p for p in spill_dir.iterdir() if p.suffix == ".safetensors"]  # no half file left
    context = list(first.blocks.token_ids)
    done = run_alone(engine, "a", [7000], 4, cache=first.blocks)
    assert done.cached_tokens == len(context)
    assert done.text == reference(model, tokenizer, context + [7000], 4)
    errors = engine.close()
    assert "cannot write spill file" in errors["a"]  # saving on close says it failed


def test_no_space_on_a_real_small_filesystem(default_model, default_spec, small_fs):
    assert_full_disk_loses_nothing(default_model, default_spec, small_fs / "spill")
    store = SessionStore(small_fs / "sessions.db")
    agent = store.add_agent(store.new_session("m"), "alice")
    written = 0
    with pytest.raises(SessionStoreError, match="full"):
        for n in range(100):
            store.finish_turn(store.begin_turn(agent, "q"), "y" * 1_000_000, "complete")
            written = n + 1
    assert store.integrity_check() == "ok"
    assert sum(m.status == "complete" and m.role == "assistant" for m in store.messages(agent)) == written


def test_no_space_reported_by_the_writer(default_model, default_spec, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mx, "save_safetensors", full)
    assert_full_disk_loses_nothing(default_model, default_spec, tmp_path)
