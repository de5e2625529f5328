"""Sessions that survive restarts: save, resume, start new, export (UI and `blockpool export`).

The flows run on the scripted engine (fast); one test resumes over the real model to show
that a restored agent's next turn continues from its adopted context.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blockpool import cli as engine_cli
from frontend.sessions import SessionStore
from tests.helpers import make_app, wait_for
from tests.scripted import scripted_app as make_scripted_app
from tui import run as tui_run
from tui.app import BlockpoolApp
from tui.cli import parse_settings
from tui.session_log import SessionLog
from tui.settings import TuiSettings
from tui.widgets import ChatMessage

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]
REPLIES = ("one two three four",)


@pytest.fixture(autouse=True)
def no_reexec(monkeypatch):
    monkeypatch.setenv("BLOCKPOOL_FAST_BLAS", "0")  # main() must not re-exec the test process


def scripted_app(db: Path, hold_after: dict[str, int] | None = None, **settings) -> BlockpoolApp:
    return make_scripted_app(REPLIES, store=SessionStore(db), hold_after=hold_after, **settings)


async def first_session(db: Path) -> str:
    """agent 1 ('coder') completes a turn; agent 2 is cut off mid-reply when the app quits.
    Returns the figures line shown under agent 1's reply."""
    app = scripted_app(db, hold_after={"agent-2": 2})
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        first, second = list(app.roster)
        app.sessions.agent_renamed(first.agent_id, "coder")
        await app.chats.send(first, "hello")
        await app.chats.send(second, "wait")
        await wait_for(pilot, lambda: not first.busy and second.status == "generating")
        return list(app.pane(first.agent_id).query(ChatMessage))[-1].note


async def test_resume_restores_agents_transcripts_and_contexts(tmp_path):
    db = tmp_path / "sessions.db"
    note = await first_session(db)
    app = scripted_app(db, resume=True)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready and app.stats is not None)
        first, second = list(app.roster)
        assert (first.name, second.name) == ("coder", "agent 2")
        assert [t.content for t in first.conversation.turns] == ["hello", "one two three four"]
        assert second.conversation.turns == []  # the interrupted turn left no reply
        replies = [m.status for m in app.sessions.messages(app.sessions.record(second.agent_id))]
        assert replies == ["complete", "interrupted"]
        assert len(app.pane(second.agent_id).query(ChatMessage)) == 2  # shown, marked interrupted
        # The finished reply's figures line comes back as it was shown before the restart.
        assert note.endswith(" tok") and list(app.pane(first.agent_id).query(ChatMessage))[-1].note == note
        await wait_for(pilot, lambda: app.stats.context_tokens.get(first.agent_id, 0) > 0)  # adopted
        await app.chats.send(first, "again")
        await wait_for(pilot, lambda: not first.busy)
        assert len(first.conversation.turns) == 4
    assert app.sessions.session_id == 1


async def test_new_starts_an_empty_session(tmp_path):
    db = tmp_path / "sessions.db"
    await first_session(db)
    app = scripted_app(db, resume=False)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        assert [a.name for a in app.roster] == ["agent 1", "agent 2"]
        assert all(a.conversation.is_empty for a in app.roster)
        assert app.sessions.session_id == 2
        assert app.sessions.spill_dir == tmp_path / "spill" / "2"


def test_default_resumes_only_the_same_model(tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    first = SessionLog(store, TuiSettings())
    assert SessionLog(store, TuiSettings()).session_id == first.session_id
    assert SessionLog(store, TuiSettings(model="gemma3-270m")).session_id != first.session_id


async def test_export_writes_the_shown_agents_markdown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = scripted_app(tmp_path / "sessions.db")
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        await app.chats.send(agent, "hello")
        await wait_for(pilot, lambda: not agent.busy)
        await pilot.press("ctrl+e")
        await wait_for(pilot, lambda: (tmp_path / "agent 1.md").exists())
    text = (tmp_path / "agent 1.md").read_text()
    assert text.startswith("# agent 1\n")
    assert "## User\n\nhello" in text
    assert "## Assistant\n\none two three four" in text


async def test_a_dialog_takes_the_chat_keys_while_it_is_open(tmp_path, monkeypatch):
    """ctrl+e in a settings field moves to the line's end; it exported into the working
    directory (the app's priority binding fired under the dialog)."""
    from textual.widgets import Input

    from tui.screens.agent_settings import AgentSettingsScreen

    monkeypatch.chdir(tmp_path)
    app = scripted_app(tmp_path / "sessions.db")
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        await pilot.press("f7")
        await wait_for(pilot, lambda: isinstance(app.screen, AgentSettingsScreen))
        field = app.screen.focused
        assert isinstance(field, Input)
        field.cursor_position = 0
        await pilot.press("ctrl+e", "ctrl+f", "ctrl+n")
        await pilot.pause()
        assert isinstance(app.screen, AgentSettingsScreen)
        assert field.cursor_position == len(field.value)
        assert len(app.roster) == 2 and not (tmp_path / "agent 1.md").exists()
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, AgentSettingsScreen))
        await pilot.press("ctrl+e")
        await wait_for(pilot, lambda: (tmp_path / "agent 1.md").exists())


async def test_blockpool_export_prints_or_writes_markdown(tmp_path, capsys):
    await first_session(tmp_path / "sessions.db")
    capsys.readouterr()
    data = ["--data-dir", str(tmp_path)]
    assert engine_cli.main(["export", *data, "--agent", "coder"]) == 0
    assert capsys.readouterr().out.startswith("# coder\n")
    assert engine_cli.main(["export", *data, "--session", "1", "--out", str(tmp_path / "all.md")]) == 0
    text = (tmp_path / "all.md").read_text()
    assert "# coder" in text and "## Assistant *(interrupted)*" in text
    assert engine_cli.main(["export", *data, "--agent", "nobody"]) == 2
    assert "no agent 'nobody'" in capsys.readouterr().err
    assert engine_cli.main(["export", *data, "--session", "9"]) == 2
    assert "no session 9" in capsys.readouterr().err


def test_unwritable_data_folder_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        tui_run.main(["--data-dir", str(blocker / "data")])
    assert exit_info.value.code == 2
    assert "cannot open the session database" in capsys.readouterr().err


async def test_resumed_agent_continues_from_its_context_on_the_real_model(tmp_path, default_model):
    def real_app(**settings) -> BlockpoolApp:
        return make_app(default_model, store=SessionStore(tmp_path / "sessions.db"), agents=1, **settings)

    app = real_app()
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready, 120.0)
        agent = app.active_agent
        await app.chats.send(agent, "Say hi.")
        await wait_for(pilot, lambda: not agent.busy, 120.0)
        first_tokens = agent.conversation.context_tokens
    assert first_tokens > 0
    app = real_app(resume=True)
    async with app.run_test() as pilot:
        agent = app.active_agent
        await wait_for(pilot, lambda: app.ready and agent.conversation.context_tokens == first_tokens, 120.0)
        await app.chats.send(agent, "Again.")
        assert agent.in_flight is not None and agent.in_flight.continues  # only the new text is sent
        await wait_for(pilot, lambda: not agent.busy, 120.0)
        assert agent.conversation.context_tokens > first_tokens


def test_resume_and_new_are_exclusive_options(capsys):
    assert parse_settings(["--new"]).resume is False
    assert parse_settings(["--resume", "--data-dir", "/tmp/x"]).data_dir == Path("/tmp/x")
    assert parse_settings([]).resume is None
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--resume", "--new"])
    assert exit_info.value.code == 2


async def test_explicit_agents_open_beside_a_resumed_session_or_say_why_not(tmp_path, default_model):
    def real_app(settings: TuiSettings) -> BlockpoolApp:
        return BlockpoolApp(settings, loaded_model=default_model, store=SessionStore(tmp_path / "sessions.db"))

    async def open_and_quit(settings: TuiSettings) -> tuple[list[str], list[str]]:
        app = real_app(settings)
        notes: list[str] = []
        original = app.notify
        app.notify = lambda message, **kwargs: (notes.append(message), original(message, **kwargs))[1]
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.ready, 120.0)
            names = [a.name for a in app.roster]
        return names, notes

    names, _ = await open_and_quit(TuiSettings(agents=2, blocks=200))
    assert names == ["agent 1", "agent 2"]
    names, notes = await open_and_quit(parse_settings(["--agents", "4", "--blocks", "200"]))
    assert names == ["agent 1", "agent 2", "agent 3", "agent 4"]
    assert any("Resumed 2 saved agents and opened 2 more" in n for n in notes)
    names, notes = await open_and_quit(TuiSettings(blocks=200))  # no --agents: the session's own four
    assert len(names) == 4 and not notes
    names, notes = await open_and_quit(parse_settings(["--agents", "1", "--blocks", "200"]))
    assert len(names) == 4
    assert any("the resumed session has 4 agents: all are kept" in n for n in notes)
