"""Forking an agent in blockpool-tui, and prefix hits shown on a new agent's first turn (real model)."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot

from frontend.sessions import SessionStore
from tests.reference import reference
from tests.helpers import capture_notifications, wait_for
from tui.agents import Agent
from tui.app import BlockpoolApp
from tui.settings import TuiSettings
from tui.widgets.chat_message import ChatMessage

MAX_TOKENS = 6
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]


def shown(app: BlockpoolApp, agent: Agent) -> list[tuple[str, str]]:
    """(role, text) of every message the agent's chat shows."""
    return [(m.role, m.text) for m in app.pane(agent.agent_id).query(ChatMessage)]


def context_ids(app: BlockpoolApp, agent: Agent) -> list[int]:
    record = app.sessions.record(agent.agent_id) if app.sessions is not None else None
    assert record is not None, f"{agent.name} has no session row"
    return record.context_tokens


async def turn(pilot: Pilot, app: BlockpoolApp, agent: Agent, text: str) -> list[int]:
    """Send ``text``; returns the tokens of the prompt it added to the context."""
    await app.chats.send(agent, text)
    assert agent.in_flight is not None and agent.in_flight.continues
    added = app.owner.engine.tokenizer.encode(agent.in_flight.prompt, add_special_tokens=False)
    return added


async def test_fork_copies_the_chat_shares_blocks_and_both_continue_like_mlx_lm(tmp_path, default_model):
    model, tokenizer = default_model
    store = SessionStore(tmp_path / "sessions.db")
    app = BlockpoolApp(TuiSettings(agents=1, blocks=200, max_tokens=MAX_TOKENS), loaded_model=default_model,
                       store=store)
    notes = capture_notifications(app)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        source = app.active_agent
        await app.chats.send(source, "Name a colour.")
        await wait_for(pilot, lambda: not source.busy)
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: len(app.roster) == 2 and any("no K/V copied" in n for n in notes))
        fork = app.active_agent
        assert fork is not source and fork.name == f"{source.name} fork"
        assert shown(app, fork) == shown(app, source)
        assert fork.conversation.turns == source.conversation.turns
        base = context_ids(app, source)
        assert context_ids(app, fork) == base  # the fork's own row: it survives a restart

        def shared_now() -> bool:
            """the pool shows the source's blocks held by both agents"""
            pool = app.stats.pool if app.stats is not None else None
            return pool is not None and pool.num_shared_blocks() > 0
        await wait_for(pilot, shared_now)
        shared = [b for b in app.stats.pool.blocks if b.is_shared]
        assert {b.ref_count for b in shared} == {2}
        assert {b.holder_ids for b in shared} == {(source.agent_id, fork.agent_id)}
        assert app.stats.pool.num_saved_blocks() == len(shared)

        fork_added = await turn(pilot, app, fork, "Now name a fruit.")
        source_added = await turn(pilot, app, source, "Now name an animal.")
        await wait_for(pilot, lambda: not fork.busy and not source.busy)
        for agent, added in ((fork, fork_added), (source, source_added)):
            expected = reference(model, tokenizer, base + added, MAX_TOKENS)
            assert agent.conversation.turns[-1].content == expected, agent.name
        assert fork.conversation.turns[-1].content != source.conversation.turns[-1].content


async def test_forking_a_busy_agent_says_to_wait_or_cancel(default_model):
    app = BlockpoolApp(TuiSettings(agents=1, blocks=200, max_tokens=40), loaded_model=default_model)
    notes = capture_notifications(app)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.ready)
        source = app.active_agent
        await app.chats.send(source, "Tell me a story.")
        await app.run_action("fork_agent")
        assert len(app.roster) == 1
        assert any("wait for the reply or cancel it" in n for n in notes)
        await app.run_action("cancel_reply")
        await wait_for(pilot, lambda: not source.busy)


async def test_a_new_agent_with_the_same_system_prompt_reports_tokens_from_shared_blocks(default_model):
    system = " ".join(f"Rule {i}: answer briefly and politely." for i in range(60))  # ~600 tokens
    app = BlockpoolApp(TuiSettings(agents=1, blocks=400, max_tokens=4, system=system), loaded_model=default_model)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        first = app.active_agent
        await app.chats.send(first, "Hello.")
        await wait_for(pilot, lambda: not first.busy)
        await app.run_action("new_agent")
        second = app.active_agent
        await app.chats.send(second, "Hi there.")

        def last_reply() -> ChatMessage:
            return [m for m in app.pane(second.agent_id).query(ChatMessage) if m.role == "assistant"][-1]

        def finished() -> bool:
            """the second agent's reply is finished and noted"""
            return not second.busy and bool(last_reply().note)
        await wait_for(pilot, finished)

        def counted() -> bool:
            """the turn's final counts are in (the panels' handler runs after the chat's)"""
            return second.turn is not None and second.turn.cached > 0
        await wait_for(pilot, counted, 10.0)
        assert second.turn is not None and second.turn.cached >= app.stats.pool.block_tokens
        assert f"{second.turn.cached:,} tok from shared blocks" in last_reply().note
        assert app.stats.telemetry.sharing.reused_tokens == second.turn.cached
        # The reused prefix is part of the context: the next turn continues instead of starting over.
        assert second.conversation.context_tokens == second.context_tokens > second.turn.cached
