"""Keys, keymap, command palette, queueing and agent management, on the scripted engine.

These flows do not depend on what the model says, so they run on the scripted engine
(fast); everything that does is in test_tui_app.py, on the real model.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from textual.pilot import Pilot

from tui.app import BlockpoolApp
from tui.scripted import ScriptedEngine
from tui.screens import TextPromptScreen
from tui.settings import TuiSettings

pytestmark = pytest.mark.anyio
REPLIES = ("one two three four five six seven eight",)


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "absent.toml"))


def scripted_app(**settings) -> BlockpoolApp:
    def factory(progress, recorder):
        return ScriptedEngine(replies=REPLIES, recorder=recorder)

    return BlockpoolApp(TuiSettings(**{"agents": 2, **settings}), engine_factory=factory)


async def wait_for(pilot: Pilot, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        await pilot.pause(0.02)


async def test_keymap_from_settings_remaps_a_binding():
    app = scripted_app(keymap={"broadcast": "ctrl+t"})
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        await pilot.press("ctrl+b")
        assert not isinstance(app.screen, TextPromptScreen)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        assert ("ctrl+t", "Broadcast", "broadcast") in app.key_rows()


async def test_command_palette_runs_app_actions():
    app = scripted_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"New agent", "Rename agent", "Close agent", "Broadcast", "Cancel reply", "Keys"} <= titles
        await pilot.press("ctrl+p")
        await pilot.press(*"new agent")
        await pilot.pause(0.5)  # the palette searches in the background
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.roster) == 3)


async def test_message_to_a_busy_agent_is_queued_then_sent():
    app = scripted_app(agents=1)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        pane = app.pane(agent.agent_id)
        app.worker.engine.hold_after[agent.agent_id] = 3
        pane.input.value = "first"
        await pilot.press("enter")
        await wait_for(pilot, lambda: agent.status == "generating")
        pane.input.value = "second"
        await pilot.press("enter")
        assert list(agent.pending) == ["second"] and pane.num_queued == 1 and pane.input.value == ""
        app.worker.engine.hold_after.clear()
        await wait_for(pilot, lambda: len(agent.conversation.turns) == 4 and not agent.busy)
        assert [t.content for t in agent.conversation.turns if t.role == "user"] == ["first", "second"]
        assert pane.num_queued == 0


async def test_new_rename_and_close_agents():
    app = scripted_app(agents=1)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: len(app.roster) == 2)
        second = list(app.roster)[1]
        await wait_for(pilot, lambda: app.active_agent is second and app.focused is app.pane(second.agent_id).input)

        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        app.screen.query_one("Input").value = "researcher"
        await pilot.press("enter")
        await wait_for(pilot, lambda: second.name == "researcher")
        assert str(app.tabs.get_tab(second.agent_id).label) == "researcher"

        await pilot.press("f4")  # no conversation yet: closes without asking
        await wait_for(pilot, lambda: len(app.roster) == 1)
        assert app.active_agent is list(app.roster)[0]
