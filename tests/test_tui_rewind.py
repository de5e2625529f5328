"""Regenerating the last reply and editing the last message in blockpool-tui (real model): the
context rolls back in the engine, nothing kept is read again, and the new reply is mlx-lm's."""

from __future__ import annotations

import pytest

from frontend.sessions import SessionStore
from tests.helpers import capture_notifications, wait_for
from tests.reference import reference
from tui.app import BlockpoolApp
from tui.settings import TuiSettings
from tui.widgets.chat_message import ChatMessage

MAX_TOKENS = 6
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]


def shown(app: BlockpoolApp, agent) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in app.pane(agent.agent_id).query(ChatMessage)]


def saved(app: BlockpoolApp, agent) -> tuple[list[str], list[int]]:
    record = app.sessions.record(agent.agent_id)
    return [m.content for m in app.sessions.messages(record)], record.context_tokens


async def two_turns(pilot, app: BlockpoolApp):
    agent = app.active_agent
    await app.chats.send(agent, "Name a colour.")
    await wait_for(pilot, lambda: not agent.busy)
    base_ids = saved(app, agent)[1]
    await app.chats.send(agent, "Name a fruit.")
    await wait_for(pilot, lambda: not agent.busy)
    return agent, base_ids


def make(tmp_path, default_model) -> BlockpoolApp:
    return BlockpoolApp(TuiSettings(agents=1, blocks=200, max_tokens=MAX_TOKENS), loaded_model=default_model,
                        store=SessionStore(tmp_path / "sessions.db"))


async def test_regenerate_rolls_the_context_back_and_reads_only_the_last_message_again(tmp_path, default_model):
    app = make(tmp_path, default_model)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent, base_ids = await two_turns(pilot, app)
        before, turn_before = shown(app, agent), agent.turn
        used_before = app.owner.engine.pool.used_blocks()
        await pilot.press("ctrl+r")  # drops the last turn, rolls the context back, sends the message again

        def regenerated() -> bool:
            """the last turn ran again and ended"""
            return not agent.busy and len(agent.conversation.turns) == 4 and agent.turn is not turn_before
        await wait_for(pilot, regenerated)
        assert shown(app, agent) == before  # greedy: the same reply again, in the same place
        assert agent.turn.cached == len(base_ids)  # the rolled-back context came from blocks
        assert agent.turn.prompt == turn_before.prompt  # only the last message was read again
        assert app.owner.engine.pool.used_blocks() == used_before

        def note() -> str:
            """the regenerated reply's figures"""
            return [m for m in app.pane(agent.agent_id).query(ChatMessage) if m.role == "assistant"][-1].note
        await wait_for(pilot, lambda: "first token" in note())
        assert f"{len(base_ids)} tok reused from blocks" in note() and "tok/s" in note()
        messages, context = saved(app, agent)
        assert len(messages) == 4 and context[: len(base_ids)] == base_ids


async def test_edit_puts_the_last_message_in_the_composer_and_sending_continues_the_rolled_back_context(
        tmp_path, default_model):
    model, tokenizer = default_model
    app = make(tmp_path, default_model)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent, base_ids = await two_turns(pilot, app)
        await pilot.press("f5")
        pane = app.pane(agent.agent_id)
        await wait_for(pilot, lambda: not agent.busy)
        assert pane.input.value == "Name a fruit." and len(shown(app, agent)) == 2
        assert agent.context_tokens == len(base_ids) and saved(app, agent) == (saved(app, agent)[0][:2], base_ids)
        await app.chats.send(agent, "Name an animal.")
        added = tokenizer.encode(agent.in_flight.prompt, add_special_tokens=False)
        assert agent.in_flight.continues
        await wait_for(pilot, lambda: not agent.busy)
        assert agent.conversation.turns[-2].content == "Name an animal."
        assert agent.conversation.turns[-1].content == reference(model, tokenizer, base_ids + added, MAX_TOKENS)
        assert agent.turn.cached == len(base_ids)


async def test_regenerate_with_no_reply_says_so(default_model):
    app = BlockpoolApp(TuiSettings(agents=1, blocks=200, max_tokens=MAX_TOKENS), loaded_model=default_model)
    notes = capture_notifications(app)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        await pilot.press("ctrl+r")
        assert any("No reply yet" in n for n in notes)
        assert not app.active_agent.busy


def user_message(app: BlockpoolApp, agent, turn_index: int) -> ChatMessage:
    return next(m for m in app.pane(agent.agent_id).query(ChatMessage) if m.turn_index == turn_index)


async def test_e_on_the_first_message_edits_it_and_the_turn_starts_a_fresh_context(tmp_path, default_model):
    model, tokenizer = default_model
    app = make(tmp_path, default_model)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent, _ = await two_turns(pilot, app)
        user_message(app, agent, 0).focus()
        await pilot.press("e")
        assert app.pane(agent.agent_id).input.value == "Name a colour."
        assert shown(app, agent) == [] and agent.conversation.turns == [] and saved(app, agent) == ([], [])
        await app.chats.send(agent, "Name a shape.")
        assert not agent.in_flight.continues  # nothing before it to keep: a fresh context
        prompt = agent.in_flight.prompt
        await wait_for(pilot, lambda: not agent.busy)
        assert agent.conversation.turns[-1].content == reference(model, tokenizer, prompt, MAX_TOKENS)


async def test_f_on_a_message_forks_the_conversation_before_it_and_the_fork_continues_from_blocks(
        tmp_path, default_model):
    model, tokenizer = default_model
    app = make(tmp_path, default_model)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        source, base_ids = await two_turns(pilot, app)
        source_turns = list(source.conversation.turns)
        user_message(app, source, 2).focus()
        await pilot.press("f")
        fork = app.active_agent
        await wait_for(pilot, lambda: fork is not source and not fork.busy)
        assert app.pane(fork.agent_id).input.value == "Name a fruit."
        assert fork.conversation.turns == source_turns[:2] and source.conversation.turns == source_turns
        assert len(shown(app, fork)) == 2 and saved(app, fork)[1] == base_ids
        await app.chats.send(fork, "Name an animal.")
        added = tokenizer.encode(fork.in_flight.prompt, add_special_tokens=False)
        await wait_for(pilot, lambda: not fork.busy)
        assert fork.conversation.turns[-1].content == reference(model, tokenizer, base_ids + added, MAX_TOKENS)
        assert fork.turn.cached == len(base_ids)  # the fork's rolled-back context, from shared blocks



async def test_an_engine_that_cannot_roll_back_regenerates_from_the_whole_history():
    """The remote and scripted engines declare ``truncate = None``: the turn is sent as a fresh prompt."""
    from tests.scripted import scripted_app

    app = scripted_app(["One.", "Two.", "Three."], agents=1)
    notes = capture_notifications(app)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        agent = app.active_agent
        for text in ("First question.", "Second question."):
            await app.chats.send(agent, text)
            await wait_for(pilot, lambda: not agent.busy)
        sent: list = []
        send = app.owner.send
        app.owner.send = lambda command: (sent.append(command), send(command))[1]  # type: ignore[method-assign]
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not agent.busy and len(agent.conversation.turns) == 4)
        assert any("cannot roll a context back" in n for n in notes)
        submit = sent[-1]
        assert not submit.continues and "First question." in submit.prompt and "Second question." in submit.prompt
        assert [t.content for t in agent.conversation.turns] == ["First question.", "One.", "Second question.", "Three."]
