"""Bad input gets a clear error, a full pool never corrupts another agent, and nothing is lost."""

from __future__ import annotations

import threading

import pytest

from engine import BlockPoolBatchEngine, EngineClosed
from pool import BlockPool

from .reference import assert_blocks_accounted, run_alone


def make_engine(default_model, spec, total_blocks: int) -> BlockPoolBatchEngine:
    model, tokenizer = default_model
    return BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, total_blocks=total_blocks), spec)


@pytest.fixture(scope="module")
def engine(default_model, default_spec):
    return make_engine(default_model, default_spec, 200)


@pytest.mark.parametrize("prompt", ["", " \n\t ", []], ids=["empty-text", "whitespace", "empty-ids"])
def test_empty_prompt_rejected(engine, prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        engine.submit("a", prompt)


def test_invalid_surrogates_rejected_control_characters_accepted(engine):
    with pytest.raises(ValueError, match="not valid Unicode text .* index 6"):
        engine.submit("a", "hello \ud800 world")
    done = run_alone(engine, "ctl", "bell\x07 tab\t nul\x00 escape\x1b[31m red", max_tokens=2)
    assert done.finish_reason in ("stop", "length")


def test_fifty_thousand_token_prompt_rejected_with_numbers(engine):
    with pytest.raises(ValueError, match=r"a context of 50000 tokens needs 5880 blocks but the whole pool has 200"):
        engine.submit("a", [100 + i % 1000 for i in range(50_000)])
    assert not engine.has_work()


def test_closing_agent_mid_generation_frees_everything(default_model, default_spec):
    engine = make_engine(default_model, default_spec, 200)
    first = run_alone(engine, "a", "Hello!", max_tokens=2)
    uid = engine.submit("a", " The quick brown fox", first.blocks, max_tokens=40)
    while not engine.step_once().deltas:
        pass
    engine.close_agent("a")
    (done,) = [c for c in engine.step() if c.uid == uid]
    assert done.finish_reason == "cancelled"
    assert engine.pool.used_blocks() == 0 and engine.agent_blocks("a") is None
    with pytest.raises(ValueError, match="was closed"):
        engine.submit("a", "still there?")


def test_a_closed_engine_refuses_every_call_that_would_change_it(default_model, default_spec):
    engine = make_engine(default_model, default_spec, 200)
    first = run_alone(engine, "a", "Hello!", max_tokens=2)
    engine.submit("a", " And then?", first.blocks, max_tokens=4)  # queued when the engine closes
    engine.close()
    used = engine.pool.used_blocks()
    calls = {"step_once": engine.step_once, "step": engine.step, "submit": lambda: engine.submit("b", "Hi"),
             "cancel": lambda: engine.cancel(0), "close_agent": lambda: engine.close_agent("a"),
             "adopt": lambda: engine.adopt("b", [1, 2, 3]), "evict": lambda: engine.evict("a"),
             "fork": lambda: engine.fork("a", "c")}
    for name, call in calls.items():
        with pytest.raises(EngineClosed, match=rf"^{name}\(\) was called after close\(\): .*build a new "):
            call()
    assert engine.pool.used_blocks() == used and engine.agent_blocks("b") is None  # nothing ran or was taken
    assert isinstance(EngineClosed("step"), RuntimeError)  # callers catching RuntimeError still do
    assert engine.close() == {}  # a second close still does nothing


def test_bad_arguments_rejected(engine):
    with pytest.raises(ValueError, match="max_tokens must be >= 1, got 0"):
        engine.submit("a", "hi", max_tokens=0)
    with pytest.raises(ValueError, match="agent_id"):
        engine.submit("", "hi")
    with pytest.raises(ValueError, match="invalid token ids"):
        engine.submit("a", [1, -5, 2])
    with pytest.raises(ValueError, match="temperature"):
        engine.submit("a", "hi", temperature=-1)
    assert not engine.has_work()


def test_prompt_larger_than_whole_pool_rejected(default_model, default_spec):
    small = make_engine(default_model, default_spec, 40)  # 30 layers: room for 256 tokens
    with pytest.raises(ValueError, match=r"needs 60 blocks but the whole pool has 40"):
        small.submit("a", list(range(100, 400)))
    assert small.pool.used_blocks() == 0


def test_foreign_and_stale_blocks_rejected(engine):
    done = run_alone(engine, "owner", "Hello there", max_tokens=2)
    with pytest.raises(ValueError, match="belongs to agent 'owner', not 'thief'"):
        engine.submit("thief", "hi", done.blocks)
    engine.pool.free_agent_blocks("owner")
    with pytest.raises(ValueError, match="no longer gives that agent"):
        engine.submit("owner", "hi", done.blocks)
    assert run_alone(engine, "owner", "Hello there", max_tokens=2).finish_reason in ("stop", "length")


def test_busy_and_closed_agents(engine):
    uid = engine.submit("busy", "Count to ten:", max_tokens=3)
    with pytest.raises(ValueError, match=f"already has request {uid} in flight"):
        engine.submit("busy", "again")
    list(engine.step())
    engine.close_agent("busy")
    assert engine.pool.agent_block_count("busy") == 0
    with pytest.raises(ValueError, match="was closed"):
        engine.submit("busy", "hello?")


def test_pool_running_out_mid_generation_keeps_previous_context(default_model, default_spec):
    engine = make_engine(default_model, default_spec, 30)  # exactly one block per layer
    prompt = list(range(2000, 2250))  # 250 tokens: generation crosses the 256 boundary
    done = run_alone(engine, "a", prompt, max_tokens=20)
    assert done.finish_reason == "error"
    assert "outgrew the whole pool after 6 tokens: it needs 30 more blocks, 0 free of 30" in done.error
    assert done.blocks.total_tokens == 0  # the fresh context never got the failed turn
    assert engine.pool.used_blocks() == 0


def test_cancel_mid_reply_keeps_partial_reply_and_consistent_blocks(default_model, default_spec):
    engine = make_engine(default_model, default_spec, 200)
    uid = engine.submit("a", "The quick brown fox", max_tokens=50)  # runs to the length limit
    generated = 0
    while generated < 3 and engine.has_work():
        generated += len(engine.step_once().deltas)
    assert generated == 3
    engine.cancel(uid)
    (done,) = [c for c in engine.step()]
    assert done.finish_reason == "cancelled"
    assert 3 <= done.generated_tokens < 50
    assert done.blocks.total_tokens == done.token_count == len(done.blocks.token_ids)
    done.blocks.check(default_spec)
    assert_blocks_accounted(engine, ["a"])
    follow = run_alone(engine, "a", " Go on.", max_tokens=3, cache=done.blocks)
    assert follow.cached_tokens == done.token_count


def test_cancel_while_queued_changes_nothing(default_model, default_spec):
    engine = make_engine(default_model, default_spec, 200)
    uid = engine.submit("a", "Hello", max_tokens=5)
    engine.cancel(uid)
    (done,) = list(engine.step())
    assert (done.finish_reason, done.generated_tokens) == ("cancelled", 0)
    assert engine.pool.used_blocks() == 0


def test_submit_and_cancel_from_another_thread(default_model, default_spec):
    engine = make_engine(default_model, default_spec, 200)
    finished = []
    stop = threading.Event()

    def stepper() -> None:
        while not stop.is_set():
            finished.extend(engine.step_once().completions)

    thread = threading.Thread(target=stepper)
    thread.start()
    try:
        uids = [engine.submit(f"agent{i}", f"Say hello number {i}.", max_tokens=4) for i in range(3)]
        engine.cancel(uids[2])
        while len(finished) < 3:
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    by_uid = {c.uid: c for c in finished}
    assert sorted(by_uid) == sorted(uids)
    assert by_uid[uids[0]].finish_reason in ("stop", "length")
    assert_blocks_accounted(engine, ["agent0", "agent1", "agent2"])
