"""Copying a focused message (c) or its last code block (y) in blockpool-tui (real model)."""

from __future__ import annotations

import pytest

from tests.helpers import wait_for
from tui.app import BlockpoolApp
from tui.settings import TuiSettings
from tui.widgets.chat_message import ChatMessage

MAX_TOKENS = 6
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]


async def test_c_and_y_on_a_focused_reply_copy_its_text_and_its_last_code_block(default_model):
    app = BlockpoolApp(TuiSettings(agents=1, blocks=200, max_tokens=MAX_TOKENS), loaded_model=default_model)
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign]
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        await app.chats.send(agent, "Hello.")
        await wait_for(pilot, lambda: not agent.busy)
        reply = [m for m in app.pane(agent.agent_id).query(ChatMessage) if m.role == "assistant"][-1]
        reply.focus()
        await pilot.press("c")
        assert copied == [agent.conversation.turns[-1].content]
        reply.text = "Try:\n```python\nprint(1)\n```\nor\n```sh\necho 2\n```"
        await pilot.press("y")
        assert copied[-1] == "echo 2\n"
