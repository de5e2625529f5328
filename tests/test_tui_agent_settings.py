"""One agent's own settings (f7) in blockpool-tui (real model): used from its next turn, priced in
tokens read again, saved with the agent and back after a restart."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Static

from frontend.sessions import SessionStore
from tests.helpers import wait_for
from tui.app import BlockpoolApp
from tui.screens import AgentSettingsScreen
from tui.settings import TuiSettings

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]


def make(store: SessionStore, default_model) -> BlockpoolApp:
    return BlockpoolApp(TuiSettings(agents=1, blocks=200, max_tokens=8), loaded_model=default_model, store=store)


async def open_dialog(pilot, app: BlockpoolApp) -> AgentSettingsScreen:
    await pilot.press("f7")
    await wait_for(pilot, lambda: isinstance(app.screen, AgentSettingsScreen), 5.0)
    return app.screen


def cost(screen: AgentSettingsScreen) -> str:
    return str(screen.query_one("#cost", Static).render())


async def submit(pilot, screen: AgentSettingsScreen, **values: str) -> None:
    for field_id, value in values.items():
        screen.query_one(f"#{field_id}", Input).value = value
    await pilot.pause()
    screen.query_one("#max_tokens", Input).focus()
    await pilot.press("enter")


async def test_settings_apply_to_the_next_turn_say_their_cost_and_survive_a_restart(tmp_path, default_model):
    store = SessionStore(tmp_path / "sessions.db")
    app = make(store, default_model)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        await app.chats.send(agent, "Hello.")
        await wait_for(pilot, lambda: not agent.busy)
        tokens = agent.context_tokens

        screen = await open_dialog(pilot, app)
        assert cost(screen) == f"Sampling changes re-read nothing: all {tokens:,} tokens stay in blocks."
        await submit(pilot, screen, top_p="2")
        assert cost(screen) == "Not saved: top_p 2 is out of range: give 0 to 1" and app.screen is screen
        await submit(pilot, screen, top_p="0.9", max_tokens="3")
        await wait_for(pilot, lambda: app.screen is app.main_screen)
        await app.chats.send(agent, "Tell me a long story.")
        assert agent.in_flight.continues  # sampling changes keep the context
        await wait_for(pilot, lambda: not agent.busy)
        assert agent.turn.generated == 3

        screen = await open_dialog(pilot, app)
        screen.query_one("#system", Input).value = "You are a pirate."
        await pilot.pause()
        assert f"re-reads all {agent.context_tokens:,} tokens; 0 stay in blocks" in cost(screen)
        await submit(pilot, screen)
        await wait_for(pilot, lambda: app.screen is app.main_screen)
        await app.chats.send(agent, "Who are you?")
        assert not agent.in_flight.continues and "You are a pirate." in agent.in_flight.prompt
        await wait_for(pilot, lambda: not agent.busy)

    (record,) = store.agents(store.last_session().id)
    assert record.system_prompt == "You are a pirate."
    assert record.options == {"temperature": 0.0, "top_p": 0.9, "max_tokens": 3, "stop": []}
    again = make(store, default_model)
    async with again.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: again.ready and len(again.roster) == 1)
        restored = again.active_agent
        assert restored.conversation.system == "You are a pirate."
        assert (restored.options.max_tokens, restored.options.top_p) == (3, 0.9)
