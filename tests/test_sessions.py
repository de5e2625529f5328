"""Sessions survive restarts and crashes; export gives the conversation as Markdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from frontend.session_export import export_markdown
from frontend.sessions import SessionStore, SessionStoreError


def test_round_trip_and_interrupted_reply(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    session = store.new_session("smollm2", {"max_tokens": 64})
    agent = store.add_agent(session, "alice", "Be brief.")
    reply = store.begin_turn(agent, "Hi")
    store.finish_turn(reply, "Hello!", "complete", finish_reason="stop", context_tokens=[1, 2, 3])
    store.begin_turn(agent, "Tell me more")  # never finished: the process "dies" here
    store.close()

    reopened = SessionStore(tmp_path / "s.db")
    assert reopened.last_session().id == session
    assert reopened.last_session().settings == {"max_tokens": 64}
    (record,) = reopened.agents(session)
    assert (record.name, record.system_prompt, record.context_tokens) == ("alice", "Be brief.", [1, 2, 3])
    messages = reopened.messages(agent)
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "Hi", "complete"),
        ("assistant", "Hello!", "complete"),
        ("user", "Tell me more", "complete"),
        ("assistant", "", "interrupted"),
    ]
    assert reopened.integrity_check() == "ok"
    markdown = export_markdown(reopened, record)
    assert markdown.startswith("# alice") and "Hello!" in markdown and "*(interrupted)*" in markdown


def test_closed_agents_are_hidden_but_kept(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    session = store.new_session("m")
    a, b = store.add_agent(session, "a"), store.add_agent(session, "b")
    store.close_agent(a)
    store.rename_agent(b, "bee")
    assert [r.name for r in store.agents(session)] == ["bee"]
    assert [r.name for r in store.agents(session, include_closed=True)] == ["a", "bee"]


def test_unwritable_data_folder_gives_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SessionStoreError, match="cannot open the session database .*BLOCKPOOL_DATA_DIR"):
        SessionStore(blocker / "sub" / "s.db")


def test_unknown_session(tmp_path):
    with pytest.raises(SessionStoreError, match="no session 42"):
        SessionStore(tmp_path / "s.db").session(42)


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from engine import BlockPoolBatchEngine, load_model
    from frontend.sessions import SessionStore
    from pool import BlockPool, ModelCacheSpec

    model, tokenizer = load_model()
    spec = ModelCacheSpec.from_model(model)
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(spec, 200), spec, spill_dir=sys.argv[2])
    store = SessionStore(sys.argv[1])
    session = store.new_session("default")
    agent = store.add_agent(session, "alice")
    reply = store.begin_turn(agent, "The quick brown fox")
    engine.submit("alice", "The quick brown fox", max_tokens=4)
    (done,) = list(engine.step())
    store.finish_turn(reply, done.text, "complete", finish_reason=done.finish_reason,
                      context_tokens=done.blocks.token_ids)
    reply = store.begin_turn(agent, " Tell me a very long story.")
    engine.submit("alice", " Tell me a very long story.", done.blocks, max_tokens=100000 // 100)
    print("GENERATING", flush=True)
    while engine.has_work():
        if engine.step_once().deltas:
            print("TOKEN", flush=True)
    """
)


def test_sigkill_mid_generation_keeps_completed_turns(tmp_path):
    db = tmp_path / "sessions.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(db), str(tmp_path / "spill")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "GENERATING", proc.stderr.read()
        for _ in range(3):  # mid-generation: three tokens of the long reply are out
            assert proc.stdout.readline().strip() == "TOKEN", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    store = SessionStore(db)
    assert store.integrity_check() == "ok"
    (agent,) = store.agents(store.last_session().id)
    messages = store.messages(agent.id)
    assert [(m.role, m.status) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "interrupted"),
    ]
    assert messages[1].content and messages[3].content == ""
    assert len(agent.context_tokens) > 4  # the completed turn's context, not the interrupted one's
