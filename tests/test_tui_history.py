"""Daily-use navigation: the prompt history (up / down, F8 search), the session browser (F9:
reopen a closed agent or an earlier session's), and j / k / g / G / i in the transcript.

Key flows run on the scripted engine (they do not depend on what the model says); reopening
an agent and going on with it runs the real model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from frontend.sessions import SessionStore
from tests.helpers import make_app, wait_for
from tests.scripted import scripted_app
from tui.finders import age, one_line
from tui.prompt_history import MAX_PROMPTS, HistoryCursor, PromptHistory
from tui.widgets import ChatMessage

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]
REPLIES = ("one two three",)


def test_the_history_keeps_distinct_prompts_newest_last_and_a_walk_gives_the_draft_back():
    history = PromptHistory(["a", "b", "a", "  "])
    assert [history[i] for i in range(len(history))] == ["b", "a"]  # "a" again moved to the end; blank skipped
    walk = HistoryCursor(history)
    assert walk.newer() is None  # not walking: nowhere newer
    assert walk.older("my draft") == "a"
    assert walk.older("a") == "b"
    assert walk.older("b") is None  # the oldest: stays
    assert walk.newer() == "a"
    assert walk.newer() == "my draft"  # past the newest: the draft it left
    assert walk.index is None
    big = PromptHistory(str(i) for i in range(MAX_PROMPTS + 5))
    assert len(big) == MAX_PROMPTS and big[0] == "5"


def test_the_store_lists_recent_prompts_and_reopenable_agents(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    old = store.new_session("m")
    kept = store.add_agent(old, "planner")
    store.begin_turn(kept, "plan the 100% release")
    store.add_agent(old, "empty")  # no messages: nothing to reopen
    now = store.new_session("m")
    closed = store.add_agent(now, "closed one")
    store.begin_turn(closed, "hello")
    store.begin_turn(closed, "plan B")
    store.close_agent(closed)
    store.add_agent(now, "open one")
    assert store.recent_prompts() == ["plan the 100% release", "hello", "plan B"]
    assert store.recent_prompts(limit=1) == ["plan B"]
    assert [s.record.name for s in store.browse_agents(now)] == ["closed one", "planner"]
    assert [s.record.name for s in store.browse_agents(now, "PLAN")] == ["closed one", "planner"]  # any message
    assert [s.record.name for s in store.browse_agents(now, "100%")] == ["planner"]  # % is a character here
    assert [s.record.name for s in store.browse_agents(now, "1_0")] == []
    summary = store.browse_agents(now, "release")[0]
    assert (summary.num_messages, summary.first_message, summary.model) == (2, "plan the 100% release", "m")
    copy = store.copy_agent(kept, now, keep_context=False)
    assert [m.content for m in store.messages(copy)] == [m.content for m in store.messages(kept)]
    assert [r.name for r in store.agents(now)] == ["open one", "planner"]
    assert store.agents(old, include_closed=True)[0].name == "planner"  # the earlier session keeps its own


def test_palette_lines_are_one_line_and_ages_read_as_people_say_them():
    assert one_line("first\n\n  second  \nthird") == "first ⏎ second ⏎ third"
    assert one_line("x" * 300, 10) == "x" * 9 + "…"
    assert [age(0, n) for n in (5, 61, 7200, 3 * 86400)] == ["just now", "1 minute ago", "2 hours ago", "3 days ago"]


async def type_text(pilot, text: str) -> None:
    app = pilot.app
    app.pane(app.active_agent.agent_id).input.insert(text)
    await pilot.pause()


async def test_up_and_down_walk_every_agents_history_and_it_survives_a_restart(tmp_path):
    db = tmp_path / "sessions.db"
    app = scripted_app(REPLIES, store=SessionStore(db))
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        first, second = list(app.roster)
        await app.chats.send(first, "first question")
        await app.chats.send(first, "a message\nof two lines")
        await wait_for(pilot, lambda: not first.busy and not first.pending)
        app.agent_tabs.activate(second.agent_id)
        composer = app.pane(second.agent_id).input
        await type_text(pilot, "my draft")
        await pilot.press("up")
        assert composer.value == "a message\nof two lines"  # another agent's message: one history
        await pilot.press("up")  # the cursor is at its end: up moves inside it first
        assert composer.value == "a message\nof two lines"
        await pilot.press("up")
        assert composer.value == "first question"
        await pilot.press("down", "down")
        assert composer.value == "my draft"  # past the newest: the draft is back
        await pilot.press("up", "enter")  # a recalled message is sent as typed
        await wait_for(pilot, lambda: len(second.conversation.turns) == 2)
        assert second.conversation.turns[0].content == "a message\nof two lines"
    app = scripted_app(REPLIES, store=SessionStore(db), resume=False)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        await pilot.press("up")
        assert app.pane(app.active_agent.agent_id).input.value == "a message\nof two lines"  # yesterday's too


async def test_f8_finds_an_earlier_message_by_any_part_of_it(tmp_path):
    app = scripted_app(REPLIES, store=SessionStore(tmp_path / "sessions.db"))
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        for text in ("explain the block pool", "write a haiku", "explain prefix caching"):
            await app.chats.send(agent, text)
        await wait_for(pilot, lambda: not agent.busy and not agent.pending)
        await pilot.press("f8")
        await wait_for(pilot, lambda: app.screen.is_modal)
        await pilot.press(*"explain")
        await pilot.pause(0.3)
        await pilot.press("enter")  # the newest match, highlighted first
        await wait_for(pilot, lambda: not app.screen.is_modal)
        assert app.pane(agent.agent_id).input.value == "explain prefix caching"


async def test_f9_reopens_a_closed_agent_and_an_earlier_sessions_and_they_go_on(tmp_path, default_model):
    db = tmp_path / "sessions.db"
    app = make_app(default_model, store=SessionStore(db), agents=1)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        await app.chats.send(agent, "Name a colour.")
        await wait_for(pilot, lambda: len(agent.conversation.turns) == 2)
        reply = agent.conversation.turns[1].content
        await app.agent_tabs.close(agent)
        assert not list(app.roster)
        await pilot.press("f9")
        await wait_for(pilot, lambda: app.screen.is_modal)
        await pilot.press(*"colour")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(list(app.roster)) == 1)
        reopened = app.active_agent
        assert [t.content for t in reopened.conversation.turns] == ["Name a colour.", reply]
        assert [m.text for m in app.pane(reopened.agent_id).query(ChatMessage)] == ["Name a colour.", reply]
        assert app.sessions.reopenable() == []  # the closed row became the open one: listed once
        await app.chats.send(reopened, "Another one?")  # it goes on, and is resident when the app quits
        await wait_for(pilot, lambda: len(reopened.conversation.turns) == 4 and not reopened.busy)
        assert reopened.error is None
    app = make_app(default_model, store=SessionStore(db), agents=1, resume=False)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        [earlier] = app.sessions.reopenable("colour")
        assert earlier.record.context_tokens  # same model: the context comes with it
        spill_file = tmp_path / "spill" / str(earlier.record.session_id) / f"agent-{earlier.record.id}.safetensors"
        assert spill_file.exists()  # saved when the first run quit
        await app.reopen_agent(earlier)
        agent = app.active_agent
        assert agent.context_tokens == len(earlier.record.context_tokens)
        assert not spill_file.exists()  # moved into this session's folder, with the agent
        await wait_for(pilot, lambda: agent.conversation.context_tokens > 0)  # the engine adopted it
        await app.chats.send(agent, "And another?")
        await wait_for(pilot, lambda: len(agent.conversation.turns) == 6 and not agent.busy)
        assert agent.error is None
        assert agent.turn is not None and agent.turn.cached == len(earlier.record.context_tokens)  # from disk
        assert app.recorder.state().restores_from_disk == 1
    store = SessionStore(db)
    assert store.browse_agents(store.last_session().id) == []  # moved, not copied: listed nowhere else
    assert [r.name for r in store.agents(store.last_session().id)] == ["agent 1 (session 1)", "agent 1"]  # told apart (ordered by row id)


async def test_j_k_g_and_shift_g_move_through_the_transcript_and_i_returns_to_the_composer(tmp_path):
    app = scripted_app(REPLIES, store=None, agents=1)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        for text in ("one", "two", "three"):
            await app.chats.send(agent, text)
        await wait_for(pilot, lambda: not agent.busy and not agent.pending)
        pane = app.pane(agent.agent_id)
        messages = list(pane.query(ChatMessage))
        assert len(messages) == 6
        await pilot.press("shift+tab")  # from the composer: the last message
        assert app.focused is messages[-1]
        await pilot.press("k", "k")
        assert app.focused is messages[-3]
        await pilot.press("j")
        assert app.focused is messages[-2]
        await pilot.press("g")
        assert app.focused is messages[0]
        await pilot.press("k")  # the first stays first
        assert app.focused is messages[0]
        await pilot.press("G")
        assert app.focused is messages[-1]
        await pilot.press("i")
        assert app.focused is pane.input
