"""Marks on the tab and row of an agent that replied off screen (real model), cleared on view; the bell."""

from __future__ import annotations

import pytest

from tests.helpers import wait_for
from tui import badges
from tui.app import BlockpoolApp
from tui.settings import TuiSettings
from tui.widgets.agent_list import AgentList

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]


def tab_label(app: BlockpoolApp, agent) -> str:
    return str(app.tabs.get_tab(agent.agent_id).label)


def row(app: BlockpoolApp, agent) -> str:
    view = next(v for v in app.query_one(AgentList).rows if v.row.agent_id == agent.agent_id)
    return str(view.render())


async def test_a_reply_off_screen_marks_its_agent_until_it_is_viewed_and_rings_when_asked(default_model):
    app = BlockpoolApp(TuiSettings(agents=2, blocks=200, max_tokens=4, bell=True), loaded_model=default_model)
    rings: list[None] = []
    app.bell = lambda: rings.append(None)  # type: ignore[method-assign]
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.ready and len(app.roster) == 2)
        shown, other = list(app.roster)
        assert app.active_agent is shown
        await app.chats.send(other, "Hello.")
        await wait_for(pilot, lambda: not other.busy and rings)  # the reply has ended, and been told
        await pilot.pause()
        assert other.badge == "finished" and tab_label(app, other) == f"✓ {other.name}"
        assert "✓" in row(app, other) and len(rings) == 1
        badges.mark(app, other, "unread")  # a weaker mark does not hide a finished reply
        assert other.badge == "finished"

        await app.chats.send(shown, "Hi.")  # the agent on screen gets no mark, the bell still rings
        await wait_for(pilot, lambda: not shown.busy and len(rings) == 2)
        assert shown.badge is None

        app.agent_tabs.activate(other.agent_id)
        await wait_for(pilot, lambda: other.badge is None)
        assert tab_label(app, other) == other.name
        await pilot.pause()
        assert "✓" not in row(app, other)
