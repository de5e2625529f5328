"""Issue 10 on disk: conversation data is private whatever the umask (item 6), exports never
overwrite silently (item 5), a damaged session database is moved aside, not lost (item 8)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine import BlockPoolBatchEngine
from blockpool import cli as engine_cli
from frontend.sessions import SessionStore
from pool import BlockPool
from tui.app import BlockpoolApp
from tui.session_log import SessionLog, open_store
from tui.settings import TuiSettings

from .helpers import wait_for
from .reference import run_alone

pytestmark = pytest.mark.usefixtures("no_user_config")


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def saved_session(db: Path) -> SessionStore:
    store = SessionStore(db)
    agent = store.add_agent(store.new_session("m"), "alice")
    store.finish_turn(store.begin_turn(agent, "Hi"), "Hello!", "complete", context_tokens=[1, 2])
    return store


def test_database_spill_files_and_exports_are_private_with_umask_022(umask_022, default_model, default_spec,
                                                                      tmp_path, capsys):
    data = tmp_path / "data"
    store = saved_session(data / "sessions.db")
    assert mode(data) == "0o700"
    assert {p.name: mode(p) for p in data.iterdir()} == {
        "sessions.db": "0o600", "sessions.db-wal": "0o600", "sessions.db-shm": "0o600"}

    model, tokenizer = default_model
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, 200), default_spec,
                                  spill_dir=data / "spill" / "1")
    run_alone(engine, "a", "Hello there", max_tokens=2)
    assert engine.evict("a")
    assert (mode(data / "spill"), mode(data / "spill" / "1")) == ("0o700", "0o700")
    assert [mode(p) for p in (data / "spill" / "1").iterdir()] == ["0o600"]

    log = SessionLog(store, TuiSettings(resume=True))
    log.agent_opened("agent-1", "alice", "", record_id=1)
    assert mode(log.export("agent-1", tmp_path)) == "0o600"
    assert engine_cli.main(["export", "--data-dir", str(data), "--out", str(tmp_path / "all.md")]) == 0
    assert mode(tmp_path / "all.md") == "0o600"


def test_export_never_overwrites_silently(tmp_path, capsys):
    store = saved_session(tmp_path / "sessions.db")
    log = SessionLog(store, TuiSettings(resume=True))
    log.agent_opened("agent-1", "alice", "", record_id=1)
    first = log.export("agent-1", tmp_path)
    first.write_text("my notes")
    second = log.export("agent-1", tmp_path)
    assert (first.name, second.name, first.read_text()) == ("alice.md", "alice-2.md", "my notes")

    out = tmp_path / "out.md"
    out.write_text("keep me")
    data = ["export", "--data-dir", str(tmp_path), "--out", str(out)]
    assert engine_cli.main(data) == 0
    assert out.read_text() == "keep me"
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'out-2.md'}"
    assert engine_cli.main([*data, "--force"]) == 0
    assert out.read_text().startswith("# alice")
    assert capsys.readouterr().out.strip() == f"wrote {out}"


@pytest.mark.anyio
async def test_a_damaged_database_is_moved_aside_and_the_app_starts_anew(default_model, tmp_path):
    garbage = b"this is not a database " * 200
    (tmp_path / "sessions.db").write_bytes(garbage)
    settings = TuiSettings(data_dir=tmp_path, agents=1, blocks=200, max_tokens=4)
    store, warning = open_store(settings)
    (moved,) = tmp_path.glob("sessions.db.corrupt-*")
    assert moved.read_bytes() == garbage  # kept, never deleted
    assert str(tmp_path / "sessions.db") in warning and str(moved) in warning
    assert store.integrity_check() == "ok" and store.sessions() == []

    app = BlockpoolApp(settings, loaded_model=default_model, store=store)
    app.startup_warnings.append(warning)
    shown: list[str] = []
    original = app.notify
    app.notify = lambda message, **kw: (shown.append(message), original(message, **kw))  # type: ignore[method-assign]
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        await app.chats.send(agent, "Hi")
        await wait_for(pilot, lambda: not agent.busy)
    assert warning in shown
    assert [m.status for m in SessionStore(tmp_path / "sessions.db").messages(1)] == ["complete", "complete"]
