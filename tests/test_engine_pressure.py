"""Pool pressure: idle agents spill to disk and come back byte-identical; requests wait
for room when nothing can be spilled; bad spill files fall back to re-prefilling."""

from __future__ import annotations

import errno

import mlx.core as mx
import pytest

from engine import BlockPoolBatchEngine
from pool import BlockPool
from telemetry import Recorder

from .reference import assert_blocks_accounted, reference, run_alone

MAX_TOKENS = 8
TOPICS = ["the sea", "mountains", "a robot", "bread", "the moon", "trains"]


def make_engine(default_model, spec, total_blocks, tmp_path, recorder=None):
    model, tokenizer = default_model
    return BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, total_blocks=total_blocks), spec,
                                spill_dir=tmp_path / "spill", recorder=recorder)


def turns_for(topic: str) -> list[str]:
    return [f"Write one sentence about {topic}.", f" Now one more sentence about {topic}, please."]


def run_conversations(engine, agent_ids, order):
    """Run each agent's turns in the given interleaving; returns texts per agent."""
    texts: dict[str, list[str]] = {a: [] for a in agent_ids}
    blocks = {a: None for a in agent_ids}
    for agent_id, turn in order:
        done = run_alone(engine, agent_id, turn, MAX_TOKENS, cache=blocks[agent_id])
        assert done.finish_reason in ("stop", "length"), done.error
        texts[agent_id].append(done.text)
        blocks[agent_id] = done.blocks
        assert_blocks_accounted(engine, agent_ids)
    return texts


def test_six_agents_share_a_pool_for_two(default_model, default_spec, tmp_path):
    agents = [f"agent{i}" for i in range(6)]
    order = [(a, turns_for(t)[k]) for k in range(2) for a, t in zip(agents, TOPICS)]
    alone = run_conversations(make_engine(default_model, default_spec, 2000, tmp_path / "big"), agents, order)

    recorder = Recorder()
    engine = make_engine(default_model, default_spec, 70, tmp_path, recorder)  # 2 contexts of 30 blocks
    pressed = run_conversations(engine, agents, order)

    assert pressed == alone
    state = recorder.state()
    assert state.evictions >= 4 and state.restores >= 4, (state.evictions, state.restores)
    resident = [a for a in agents if a not in engine.spilled_agents()]
    assert engine.pool.used_blocks() == sum(engine.agent_blocks(a).num_blocks() for a in resident)
    assert len(resident) <= 2


def test_request_waits_in_queue_until_blocks_free(default_model, default_spec, tmp_path):
    engine = make_engine(default_model, default_spec, 40, tmp_path)  # room for one context
    first = engine.submit("a", "The quick brown fox", max_tokens=6)
    second = engine.submit("b", "Tell me about the moon.", max_tokens=6)
    saw_queued = False
    done = {}
    while engine.has_work():
        out = engine.step_once()
        saw_queued |= engine.num_active == 1 and engine.num_queued == 1
        done.update({c.uid: c for c in out.completions})
    assert saw_queued
    assert done[first].finish_reason in ("stop", "length")
    assert done[second].finish_reason in ("stop", "length"), done[second].error
    # "a" was spilled to make room for "b" once "a" was idle.
    assert engine.spilled_agents() == {"a"}


def test_corrupt_spill_file_falls_back_to_prefill(default_model, default_spec, tmp_path):
    model, tokenizer = default_model
    engine = make_engine(default_model, default_spec, 200, tmp_path)
    first = run_alone(engine, "a", "Write one sentence about bread.", MAX_TOKENS)
    assert engine.evict("a")
    path = tmp_path / "spill" / "a.safetensors"
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    history = list(first.blocks.token_ids)
    follow = " And one about butter."
    done = run_alone(engine, "a", follow, MAX_TOKENS, cache=first.blocks)
    assert done.finish_reason in ("stop", "length"), done.error
    # Re-prefilled from its token ids: the same as mlx-lm on the whole context at once.
    assert done.text == reference(model, tokenizer, history + engine.encode(follow), MAX_TOKENS)
    assert not path.exists()


def test_spill_failure_keeps_agent_resident(default_model, default_spec, tmp_path, monkeypatch):
    engine = make_engine(default_model, default_spec, 40, tmp_path)
    first = run_alone(engine, "a", "Hello!", MAX_TOKENS)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mx, "save_safetensors", disk_full)
    assert not engine.evict("a")
    assert engine.pool.agent_block_count("a") == first.blocks.num_blocks()
    blocked = run_alone(engine, "b", "Hi there!", MAX_TOKENS)
    assert blocked.finish_reason == "error"
    assert "no idle agent could be spilled" in blocked.error
    monkeypatch.undo()
    again = run_alone(engine, "a", " Again!", MAX_TOKENS, cache=first.blocks)  # nothing was lost
    assert again.finish_reason in ("stop", "length")


def test_unwritable_spill_folder(default_model, default_spec, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    model, tokenizer = default_model
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, total_blocks=40), default_spec,
                                  spill_dir=tmp_path / "file" / "spill")
    run_alone(engine, "a", "Hello!", MAX_TOKENS)
    assert not engine.evict("a")
    assert engine.pool.agent_block_count("a") == 30


def test_adopted_context_restores_from_disk_after_restart(default_model, default_spec, tmp_path):
    engine = make_engine(default_model, default_spec, 200, tmp_path)
    first = run_alone(engine, "a", "Write one sentence about trains.", MAX_TOKENS)
    expected = run_alone(engine, "a", " And planes?", MAX_TOKENS, cache=first.blocks).text
    engine2 = make_engine(default_model, default_spec, 200, tmp_path / "other")
    first2 = run_alone(engine2, "a", "Write one sentence about trains.", MAX_TOKENS)
    assert engine2.evict("a")
    # A new engine (a restarted app) adopts the context from the same spill folder.
    recorder = Recorder()
    engine3 = make_engine(default_model, default_spec, 200, tmp_path / "other", recorder)
    adopted = engine3.adopt("a", first2.blocks.token_ids)
    done = run_alone(engine3, "a", " And planes?", MAX_TOKENS, cache=adopted)
    assert done.text == expected
    assert done.cached_tokens == len(first2.blocks.token_ids)
    (restore,) = recorder.events(kind="restore")
    assert restore.source == "disk"


def test_spill_file_of_another_model_is_refused(default_model, default_spec, tmp_path):
    from engine.kv.spill import SpillError, SpillStore

    engine = make_engine(default_model, default_spec, 200, tmp_path)
    run_alone(engine, "a", "Hello!", MAX_TOKENS)
    assert engine.evict("a")
    with pytest.raises(SpillError, match="written by another model"):
        SpillStore(tmp_path / "spill", default_spec, model_key="other-weights").load("a")
    foreign = tmp_path / "spill" / "b.safetensors"
    foreign.write_bytes(b"\x00" * 64)
    with pytest.raises(SpillError, match="unreadable"):
        SpillStore(tmp_path / "spill", default_spec).load("b")


def test_a_reply_short_of_blocks_pauses_the_youngest_and_both_finish(default_model, default_spec, tmp_path):
    """Two replies that fit the pool one at a time but not together (each grows past its first
    block per layer): the younger is paused, its K/V kept aside, while the older takes the
    blocks; it resumes where it stopped. Both replies equal their runs alone; none errors."""
    prompts = {"older": list(range(2000, 2240)), "younger": list(range(3000, 3240))}  # 240 tokens each
    alone_engine = make_engine(default_model, default_spec, 400, tmp_path / "alone")
    alone = {a: run_alone(alone_engine, a, p, max_tokens=30) for a, p in prompts.items()}
    recorder = Recorder()
    engine = make_engine(default_model, default_spec, 90, tmp_path / "tight", recorder)  # 3 blocks a layer
    uids = {a: engine.submit(a, p, max_tokens=30) for a, p in prompts.items()}
    done = {c.uid: c for c in engine.step()}
    for agent_id, uid in uids.items():
        assert done[uid].finish_reason != "error", done[uid].error
        assert done[uid].text == alone[agent_id].text, agent_id
        assert done[uid].token_ids == alone[agent_id].token_ids, agent_id
    preempted = recorder.events("preemption")
    assert preempted and {e.agent_id for e in preempted} == {"younger"}
    assert recorder.state().preemptions == len(preempted)
    resident = [a for a in prompts if a not in engine.spilled_agents()]
    assert_blocks_accounted(engine, resident)
