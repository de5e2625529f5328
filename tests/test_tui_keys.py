"""Keys, keymap, command palette, queueing and agent management, on the scripted engine.

These flows do not depend on what the model says, so they run on the scripted engine
(fast); everything that does is in test_tui_app.py, on the real model.
"""

from __future__ import annotations

import pytest
from textual.command import CommandList

from tests.helpers import wait_for
from tests.scripted import scripted_app as make_scripted_app
from tui.app import BlockpoolApp
from tui.screens import TextPromptScreen

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]
REPLIES = ("one two three four five six seven eight",)


def scripted_app(**settings) -> BlockpoolApp:
    return make_scripted_app(REPLIES, **settings)


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

        def found() -> bool:
            """the palette's search (in the background) to highlight 'New agent'"""
            hits = app.screen.query(CommandList)
            return bool(hits) and hits.first().highlighted is not None and "New agent" in str(
                hits.first().get_option_at_index(hits.first().highlighted).prompt)

        await wait_for(pilot, found)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.roster) == 3)


async def test_message_to_a_busy_agent_is_queued_then_sent():
    app = scripted_app(agents=1)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        pane = app.pane(agent.agent_id)
        app.owner.engine.hold_after[agent.agent_id] = 3
        pane.input.value = "first"
        await pilot.press("enter")
        await wait_for(pilot, lambda: agent.status == "generating")
        pane.input.value = "second"
        await pilot.press("enter")
        assert list(agent.pending) == ["second"] and pane.num_queued == 1 and pane.input.value == ""
        app.owner.engine.hold_after.clear()
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
