"""Issue 10 through blockpool-tui on the real model: a resumed agent continues from its own
K/V restored from the file saved on quit (items 1, 2), and an engine failure in any part
of a step ends the turn visibly, gives queued messages back and brings the engine back (item 3)."""

from __future__ import annotations

import threading

import pytest

from frontend.sessions import SessionStore
from engine.batch_engine import BlockPoolBatchEngine
from engine.step_loop import StepLoop
from tests.helpers import capture_notifications, make_app, wait_for
from tui.app import BlockpoolApp

from .reference import reference

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]
WAIT_S = 120.0
MAX_TOKENS = 6


def real_app(default_model, db, **settings) -> BlockpoolApp:
    return make_app(default_model, store=SessionStore(db), **{"max_tokens": MAX_TOKENS, **settings})


async def test_resumed_agent_continues_from_its_own_cache_saved_on_quit(default_model, tmp_path):
    db = tmp_path / "sessions.db"
    app = real_app(default_model, db)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        first, second = list(app.roster)
        await app.chats.send(first, "Say hi.")
        await app.chats.send(second, "Name a colour.")
        await wait_for(pilot, lambda: not first.busy and not second.busy)
        await app.agent_tabs.close(first)
        await wait_for(pilot, lambda: app.stats is not None and first.agent_id not in app.stats.pool.agent_usage())
    (record,) = SessionStore(db).agents(1)
    assert record.name == "agent 2" and record.context_tokens

    app = real_app(default_model, db, resume=True, agents=1)  # an explicit --agents N opens agents up to N
    async with app.run_test(size=(140, 40)) as pilot:
        (agent,) = list(app.roster)
        await wait_for(pilot, lambda: app.ready and agent.conversation.context_tokens == len(record.context_tokens))
        await app.chats.send(agent, "And another one?")
        assert agent.in_flight.continues
        await wait_for(pilot, lambda: not agent.busy)
        context = app.owner.engine.agent_blocks(agent.agent_id).token_ids
    (restore,) = app.recorder.events("restore")
    assert (restore.source, restore.num_tokens, restore.error) == ("disk", len(record.context_tokens), None)
    finished = app.recorder.events("request_finished")[-1]
    prompt_ids = context[: finished.cached_tokens + finished.prompt_tokens]
    assert prompt_ids[: len(record.context_tokens)] == record.context_tokens  # its own history
    model, tokenizer = default_model
    assert agent.conversation.turns[-1].content == reference(model, tokenizer, prompt_ids, MAX_TOKENS)


async def test_a_fault_in_an_engine_step_ends_the_turn_and_the_engine_comes_back(default_model, tmp_path,
                                                                                 monkeypatch):
    real_admit = StepLoop.admit
    faults = []
    both_sent = threading.Event()

    def admit_failing_once(self, deltas, prefill):
        if not faults:
            faults.append(True)
            both_sent.wait(WAIT_S)  # the second message must be queued behind the first
            raise OSError(28, "No space left on device (injected)")
        return real_admit(self, deltas, prefill)

    app = real_app(default_model, tmp_path / "sessions.db", agents=1)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        (agent,) = list(app.roster)
        pane = app.pane(agent.agent_id)
        await app.chats.send(agent, "Say hi.")
        # The pane has drawn the finished reply (ChatPane.finish_reply awaits, then clears its
        # reply; a turn begun before that would lose its placeholder: a separate widget race).
        await wait_for(pilot, lambda: not agent.busy and pane.reply_text is None)
        turns = len(agent.conversation.turns)

        monkeypatch.setattr(StepLoop, "admit", admit_failing_once)
        await app.chats.send(agent, "Name a colour.")
        await app.chats.send(agent, "Name a fruit.")  # queued behind it
        assert list(agent.pending) == ["Name a fruit."]
        both_sent.set()
        await wait_for(pilot, lambda: agent.status == "error" and not agent.busy and not agent.pending, WAIT_S)
        assert "No space left on device (injected)" in agent.error
        assert pane.input.value == "Name a colour. Name a fruit."  # nothing typed is lost
        assert not agent.pending and len(agent.conversation.turns) == turns

        await wait_for(pilot, lambda: app.ready)  # a new engine, the context re-adopted
        pane.input.value = ""  # what Enter does in the composer; app.send is called directly here
        await app.chats.send(agent, "Name a colour.")
        await wait_for(pilot, lambda: not agent.busy)
        assert agent.status == "idle" and agent.conversation.turns[-1].content
        assert len(agent.conversation.turns) == turns + 2
        context = app.owner.engine.agent_blocks(agent.agent_id).token_ids
        assert app.owner.engine.tokenizer.decode(context) == agent.conversation.context_text


async def test_a_failing_submit_is_that_turns_error_and_the_other_agents_turn_goes_on(default_model, tmp_path,
                                                                                     monkeypatch):
    """A submit failing with anything but ValueError (a bug on the way in) once restarted the whole
    engine, ending every other agent's turn in flight with the error."""
    real_submit = BlockPoolBatchEngine.submit

    def submit(self, agent_id, *args, **kwargs):
        if agent_id == second.agent_id:
            raise TypeError("injected")
        return real_submit(self, agent_id, *args, **kwargs)

    app = real_app(default_model, tmp_path / "sessions.db", max_tokens=40)
    async with app.run_test(size=(140, 40)) as pilot:
        notes = capture_notifications(app)
        await wait_for(pilot, lambda: app.ready)
        first, second = list(app.roster)
        monkeypatch.setattr(BlockPoolBatchEngine, "submit", submit)
        await app.chats.send(first, "Tell me a long story about a lighthouse.")
        await wait_for(pilot, lambda: first.status == "generating")
        await app.chats.send(second, "Name a colour.")
        await wait_for(pilot, lambda: not second.busy)
        assert second.status == "idle" and not second.conversation.turns
        assert app.pane(second.agent_id).input.value == "Name a colour."  # nothing typed is lost
        await wait_for(pilot, lambda: not first.busy, WAIT_S)
        assert first.status == "idle" and len(first.conversation.turns) == 2 and first.conversation.turns[1].content
        assert notes == ["TypeError: injected"]  # the one refusal, no "Engine failed"
