"""The composer and the live figures, with Pilot over the real default model.

Keys are posted the way a terminal delivers a burst: all at once, before the app has
handled the first, so nothing can depend on the input having caught up.
"""

from __future__ import annotations

import time

import pytest
from textual import events
from textual.keys import _character_to_key
from textual.widgets import Markdown

from tests.helpers import capture_notifications, make_app, wait_for
from tui.agents import AgentRow
from tui.app import BlockpoolApp
from tui.screens import HelpScreen, TextPromptScreen
from tui.widgets import AgentList, ChatMessage
from tui.widgets.agent_list import row_text as agent_row_text

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]
CODE_PASTE = "def f(x):\n    return x * 2\n\nExplain this code."


def burst(app: BlockpoolApp, text: str, *, enter: bool = True) -> None:
    """Every key of ``text`` (then Enter) posted at once, as a fast typist or a paste without brackets."""
    for char in text:
        app.post_message(events.Key(_character_to_key(char), char))
    if enter:
        app.post_message(events.Key("enter", "\r"))


def count_help(app: BlockpoolApp) -> list[int]:
    opened: list[int] = []
    original = app.action_help

    def action_help() -> None:
        opened.append(1)
        original()

    app.action_help = action_help  # type: ignore[method-assign]
    return opened


async def test_question_marks_typed_in_bursts_while_another_agent_streams_are_sent_whole(default_model):
    app = make_app(default_model, agents=2, max_tokens=48)
    async with app.run_test(size=(140, 40)) as pilot:
        opened = count_help(app)
        await wait_for(pilot, lambda: app.ready)
        first, second = list(app.roster)
        app.pane(first.agent_id).input.value = "Write a long story about a dragon."
        await pilot.press("enter")
        await wait_for(pilot, lambda: first.status == "generating")
        app.settings.max_tokens = 3
        await pilot.press("f6")
        await wait_for(pilot, lambda: app.focused is app.pane(second.agent_id).input)
        questions = ["Is it raining? Answer briefly?", "Thanks! One more line?", "?"]
        for question in questions:
            burst(app, question)
        await wait_for(pilot, lambda: len(second.conversation.turns) == 6 and not second.busy)
        assert [t.content for t in second.conversation.turns[::2]] == questions
        assert not opened and not isinstance(app.screen, HelpScreen)
        assert app.pane(second.agent_id).input.value == ""


async def test_help_is_f1_from_the_composer_and_question_mark_elsewhere(default_model):
    app = make_app(default_model, agents=1)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        composer = app.pane(app.active_agent.agent_id).input
        await pilot.press("question_mark")
        assert composer.value == "?" and not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))
        app.query_one(AgentList).focus()
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert composer.value == "?"


async def test_a_multi_line_paste_is_sent_whole_and_the_context_holds_every_line(default_model):
    app = make_app(default_model, agents=1, max_tokens=4)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        composer = app.pane(agent.agent_id).input
        app.post_message(events.Paste(CODE_PASTE))  # a bracketed paste, as the terminal delivers it
        await wait_for(pilot, lambda: composer.text == CODE_PASTE)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(agent.conversation.turns) == 2 and not agent.busy)
        assert agent.conversation.turns[0].content == CODE_PASTE
        engine = app.owner.engine
        context = engine.tokenizer.decode(engine.agent_blocks(agent.agent_id).token_ids)
        assert CODE_PASTE in context


async def test_ctrl_j_adds_a_line_and_the_composer_grows_then_scrolls(default_model):
    app = make_app(default_model, agents=1)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        composer = app.pane(app.active_agent.agent_id).input
        one_line = composer.size.height
        burst(app, "first", enter=False)
        app.post_message(events.Key("ctrl+j", "\n"))
        burst(app, "second", enter=False)
        await wait_for(pilot, lambda: composer.text == "first\nsecond")
        await pilot.pause()
        assert composer.size.height == one_line + 1
        composer.value = "\n".join(f"line {i}" for i in range(20))
        await pilot.pause()
        assert composer.size.height == 6 and composer.max_scroll_y > 0  # six lines shown, the rest scroll


async def test_30000_characters_pasted_or_typed_land_whole_and_oversized_text_is_kept(default_model):
    app = make_app(default_model, agents=1, blocks=30)
    text = ("lighthouse keeper? " * 1600)[:30_000]
    async with app.run_test(size=(140, 40)) as pilot:
        notes = capture_notifications(app)
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        composer = app.pane(agent.agent_id).input
        app.post_message(events.Paste(text))
        await wait_for(pilot, lambda: composer.text == text)
        composer.value = ""
        burst(app, text, enter=False)  # a terminal without bracketed paste: one key per character
        await wait_for(pilot, lambda: composer.text == text)  # how fast: benchmarks/bench_paste.py

        await pilot.press("enter")
        await wait_for(pilot, lambda: bool(notes) and composer.text == text)
        assert "needs" in notes[0] and "blocks" in notes[0] and "whole pool has 30" in notes[0]
        assert not agent.conversation.turns and agent.status == "idle"


async def test_agents_list_shows_live_token_counts_and_state(default_model):
    # A reply long enough to be seen mid-way on a quiet machine too ("Count from one to twenty."
    # ended after 16 tokens, inside one 0.1 s poll).
    app = make_app(default_model, agents=1, max_tokens=64)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        app.pane(agent.agent_id).input.value = "Tell me a long story about a fox and a crow."
        await pilot.press("enter")
        await wait_for(pilot, lambda: agent.turn is not None and agent.turn.generated >= 3 and agent.busy)
        row = AgentRow.of(agent)
        assert row.status == "generating"
        assert row.context_tokens == agent.turn.prompt + agent.turn.generated > agent.turn.prompt > 0
        text = agent_row_text(row).plain
        assert "generating" in text and f"{agent.turn.prompt} prompt + " in text
        await wait_for(pilot, lambda: not agent.busy)
        finished = app.recorder.events("request_finished")[-1]
        assert (agent.turn.prompt, agent.turn.generated) == (finished.prompt_tokens, finished.generated_tokens)
        assert AgentRow.of(agent).context_tokens == agent.context_tokens > 0


async def test_refresh_rate_changes_live_and_panels_redraw_only_from_engine_stats(default_model):
    app = make_app(default_model, agents=1, max_tokens=24)
    async with app.run_test(size=(140, 40)) as pilot:
        def drawn_idle() -> bool:
            """the engine idle, and its last stats drawn"""
            stats = app.stats
            return (app.ready and stats is not None and not stats.num_active and not stats.num_queued
                    and not app.panels.redraw_due)

        await wait_for(pilot, drawn_idle)
        draws: list[float] = []
        original = app.refresh_panels

        def refresh_panels() -> None:
            draws.append(time.monotonic())
            original()

        app.refresh_panels = refresh_panels  # type: ignore[method-assign]
        await pilot.pause(1.0)
        assert draws == []  # idle: no stats, no redraws (no timer of its own)

        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        app.screen.query_one("Input").value = "1"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.settings.refresh_s == 1.0)
        agent = app.active_agent
        app.pane(agent.agent_id).input.value = "Count from one to twenty."
        await pilot.press("enter")
        await wait_for(pilot, lambda: not agent.busy and drawn_idle())
        gaps = [b - a for a, b in zip(draws, draws[1:])]
        assert draws and all(gap >= 0.95 for gap in gaps), gaps


async def test_keys_typed_right_after_switching_agents_go_to_the_new_agent(default_model):
    app = make_app(default_model, agents=2, max_tokens=3)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        first, second = list(app.roster)
        app.post_message(events.Key("f6", None))  # F6 and the message in one burst, as tmux send-keys sends them
        burst(app, "Hello?")
        await wait_for(pilot, lambda: len(second.conversation.turns) == 2 and not second.busy)
        assert second.conversation.turns[0].content == "Hello?"
        assert not first.conversation.turns and not first.pending


async def test_a_reply_that_ends_off_screen_is_rendered_when_its_chat_is_shown(default_model):
    app = make_app(default_model, agents=2, max_tokens=8)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        first, second = list(app.roster)
        await app.chats.send(second, "Name a colour.")  # agent 1's chat stays on screen
        await wait_for(pilot, lambda: len(second.conversation.turns) == 2 and not second.busy)
        reply = list(app.pane(second.agent_id).query(ChatMessage))[-1]
        assert not reply.drawn  # kept, not re-parsed while another chat is shown
        await pilot.press("f6")
        await wait_for(pilot, lambda: reply.drawn)
        assert reply.query_one(Markdown).source == second.conversation.turns[1].content
