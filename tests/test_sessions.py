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


def test_a_version_2_file_opens_and_replies_keep_their_figures_line(tmp_path):
    """Files written before replies had a note column (schema 2) open, keep their messages, and gain it."""
    import sqlite3

    path = tmp_path / "s.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE sessions (id INTEGER PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL,
                               model TEXT NOT NULL, settings TEXT NOT NULL DEFAULT '{}');
        CREATE TABLE agents (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, name TEXT NOT NULL,
                             system_prompt TEXT NOT NULL DEFAULT '', closed INTEGER NOT NULL DEFAULT 0,
                             context_tokens BLOB NOT NULL DEFAULT x'', created_at REAL NOT NULL,
                             options TEXT NOT NULL DEFAULT '{}');
        CREATE TABLE messages (id INTEGER PRIMARY KEY, agent_id INTEGER NOT NULL, role TEXT NOT NULL,
                               content TEXT NOT NULL, status TEXT NOT NULL, finish_reason TEXT,
                               created_at REAL NOT NULL);
        INSERT INTO sessions VALUES (1, 0, 0, 'smollm2', '{}');
        INSERT INTO agents (id, session_id, name, created_at) VALUES (1, 1, 'alice', 0);
        INSERT INTO messages VALUES (1, 1, 'user', 'Hi', 'complete', NULL, 0);
        INSERT INTO messages VALUES (2, 1, 'assistant', 'Hello!', 'complete', 'stop', 0);
        PRAGMA user_version=2;
    """)
    old.close()
    store = SessionStore(path)
    assert [(m.content, m.note) for m in store.messages(1)] == [("Hi", ""), ("Hello!", "")]
    reply = store.begin_turn(1, "More?")
    store.finish_turn(reply, "Sure.", "complete", finish_reason="stop", note="2 tok · first token 0.30 s")
    store.close()
    assert SessionStore(path).messages(1)[-1].note == "2 tok · first token 0.30 s"


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
