"""blockpool-tui driven with Pilot over the real default model (small pools, short replies)."""

from __future__ import annotations

import time

import pytest

from engine.blas.choice import choose
from engine.blas.libraries import LIB_ENV
from engine.blas.verdicts import VerdictCache
from pool import ModelCacheSpec
from tests.blas_libraries import WRONG, build
from tests.helpers import WAIT_S, capture_notifications, make_app, map_colours, send, wait_for
from tui.app import BlockpoolApp
from engine.owner_messages import TokensGenerated
from tui.messages import EngineEvent
from tui.screens import ConfirmScreen, TextPromptScreen
from tui.settings import TuiSettings
from tui.widgets import BlockMapPanel

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]


async def test_two_agents_stream_complete_and_closing_frees_blocks(default_model):
    app = make_app(default_model)
    deltas: dict[int, int] = {}  # request id -> steps that brought it text

    def count_deltas(message) -> None:
        if isinstance(message, EngineEvent) and isinstance(message.event, TokensGenerated):
            for request_id, text in message.event.text.items():
                deltas[request_id] = deltas.get(request_id, 0) + bool(text)

    async with app.run_test(size=(140, 40), message_hook=count_deltas) as pilot:
        await wait_for(pilot, lambda: app.ready)
        first, second = list(app.roster)
        await send(pilot, "Hi")
        await pilot.press("f6")
        await send(pilot, "Hello")
        await wait_for(pilot, lambda: not first.busy and not second.busy)
        # Both replies arrived token by token, not in one piece at the end.
        assert len(deltas) == 2 and all(count >= 2 for count in deltas.values()), deltas
        for agent, user_text in ((first, "Hi"), (second, "Hello")):
            assert agent.status == "idle"
            assert [t.role for t in agent.conversation.turns] == ["user", "assistant"]
            assert agent.conversation.turns[0].content == user_text
            assert agent.conversation.turns[1].content.strip()

        await wait_for(pilot, lambda: app.stats is not None and len(app.stats.pool.agent_usage()) == 2)
        assert {first.colour, second.colour} <= map_colours(app)
        usage = app.stats.pool.agent_usage()
        used_before = app.stats.pool.used_blocks()

        await pilot.press("f4")  # the active agent is the second one
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: second.agent_id not in app.stats.pool.agent_usage())
        assert app.stats.pool.used_blocks() == used_before - usage[second.agent_id]
        assert [a.agent_id for a in app.roster] == [first.agent_id]
        assert second.colour not in map_colours(app)


async def test_the_header_and_the_pool_panel_name_the_block_format_and_its_size(default_model):
    """--kv-bits 8: whole in the header at 120 columns; in the pool panel's title at 80, where the header is cut."""
    app = make_app(default_model, agents=1, blocks=2000, kv_bits=8)
    spec = ModelCacheSpec.from_model(default_model[0], kv_bits=8)
    assert 10 * 1024 <= spec.bytes_per_block < 2**20  # so it reads as whole KiB
    size = f"{round(spec.bytes_per_block / 1024)} KiB"
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready and app.stats is not None)
        assert f"{spec.n_layers} layers · 2,000 q8/g64 blocks × 256 tok, {size} each" in app.sub_title
        header = app.query_one("HeaderTitle")
        assert app.format_title(app.title, app.sub_title).cell_length <= header.content_size.width
        panel = app.query_one(BlockMapPanel)
        app.refresh_panels()
        await pilot.pause()
        assert panel.border_title == f"KV blocks · q8/g64 · {size} each"
        await pilot.resize_terminal(80, 30)
        await pilot.pause()
        assert len(panel.border_title) <= panel.outer_size.width - 6  # "╭─ " and " ─╮" around it


async def test_the_engine_thread_wins_the_gil_back_within_half_a_millisecond(default_model):
    """The engine thread drops the GIL in every MLX call and must win it back from the UI: at
    CPython's default 5 ms switch interval a 30-block gather beside a busy UI took 5x as long."""
    import sys

    from engine.owner_thread import SWITCH_INTERVAL_S

    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        app = make_app(default_model, agents=1, blocks=2000)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.ready)
            assert sys.getswitchinterval() == SWITCH_INTERVAL_S
    finally:
        sys.setswitchinterval(previous)


async def test_a_blas_that_failed_its_probe_is_named_in_a_warning_on_screen(default_model, monkeypatch, tmp_path):
    """The fallback warning goes to stderr, which the TUI's screen hides: the app shows it too."""
    library = build(tmp_path, "wrong", WRONG)
    monkeypatch.setenv(LIB_ENV, str(library))
    choice = choose(cache=VerdictCache(tmp_path / "verdicts.json"), warn=False)
    assert choice.library is None and [lib.path for lib, _ in choice.rejected] == [library]  # the real probe
    (note,) = choice.fallback_notes()
    app = BlockpoolApp(TuiSettings(agents=1, blocks=200, max_tokens=6), loaded_model=default_model,
                       blas_notes=choice.fallback_notes())
    async with app.run_test(size=(140, 40), notifications=True) as pilot:  # toasts are off in tests by default
        await wait_for(pilot, lambda: app.screen.query("Toast"))
        (toast,) = app.screen.query("Toast")
        assert toast.has_class("-warning")
        assert toast.render().plain == f"BLAS fallback\n{note}"
        assert f"BLAS {library} failed its probe" in note and "bundled reference BLAS" in note


async def test_cancel_mid_reply_keeps_the_context_consistent(default_model):
    # A long limit: the reply must still be running when Escape arrives, however fast the machine.
    app = make_app(default_model, agents=1, max_tokens=200)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        (agent,) = list(app.roster)
        await send(pilot, "Write a long story about a dragon and a lighthouse.")
        pane = app.pane(agent.agent_id)
        await wait_for(pilot, lambda: len((pane.reply_text or "").split()) >= 2)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not agent.busy)
        reply = agent.conversation.turns[-1].content
        assert 0 < len(reply.split()) < 150
        engine = app.owner.engine
        context_ids = engine.agent_blocks(agent.agent_id).token_ids
        assert engine.tokenizer.decode(context_ids) == agent.conversation.context_text

        app.settings.max_tokens = 3  # the next turn only has to show the agent still works
        await send(pilot, "Thanks.")
        await wait_for(pilot, lambda: not agent.busy)
        assert agent.status == "idle"
        assert len(agent.conversation.turns) == 4
        context_ids = engine.agent_blocks(agent.agent_id).token_ids
        assert engine.tokenizer.decode(context_ids) == agent.conversation.context_text


async def test_broadcast_sends_one_prompt_to_every_agent(default_model):
    app = make_app(default_model, agents=3, max_tokens=4)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        await send(pilot, "Name a colour.")
        agents = list(app.roster)
        await wait_for(pilot, lambda: all(a.conversation.turns for a in agents) and not any(a.busy for a in agents))
        assert [a.conversation.turns[0].content for a in agents] == ["Name a colour."] * 3
        batch_sizes = [e.batch_size for e in app.recorder.events("engine_step")]
        assert max(batch_sizes) >= 2


def prompt_of_tokens(tokenizer, num_tokens: int) -> str:
    """A user message whose chat-template text is ``num_tokens`` tokens long (with the default system prompt)."""
    words = 1
    while True:
        text = " ".join(["lighthouse"] * words)
        messages = [{"role": "system", "content": TuiSettings().system}, {"role": "user", "content": text}]
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if len(tokenizer.encode(rendered, add_special_tokens=False)) >= num_tokens:
            return text
        words += 1


async def test_bad_input_never_loses_text_and_a_failed_reply_leaves_the_agent_usable(default_model):
    # 30 blocks: one block per layer, so a context holds at most 256 tokens.
    app = make_app(default_model, agents=1, blocks=30, max_tokens=16)
    async with app.run_test(size=(140, 40)) as pilot:
        notes = capture_notifications(app)
        await wait_for(pilot, lambda: app.ready)
        (agent,) = list(app.roster)
        pane = app.pane(agent.agent_id)
        await pilot.press("enter")  # an empty message is ignored
        assert not agent.busy and not notes

        too_long = "lighthouse " * 300
        await send(pilot, too_long)
        await wait_for(pilot, lambda: bool(notes) and not pane.query(".messages ChatMessage"))
        assert "whole pool has 30" in notes[0]
        assert pane.input.value == too_long
        assert agent.status == "idle" and not agent.conversation.turns

        # Fits when sent, but the reply crosses 256 tokens and the pool has no second block per layer.
        near_limit = prompt_of_tokens(app.owner.engine.tokenizer, 250)
        pane.input.value = ""
        await send(pilot, near_limit)
        await wait_for(pilot, lambda: agent.status == "error")
        assert "outgrew the whole pool" in agent.error
        assert any("outgrew the whole pool" in n for n in notes)
        assert pane.input.value == near_limit  # back in the input, ready to edit
        assert not agent.conversation.turns

        pane.input.value = ""
        await send(pilot, "Hi")
        await wait_for(pilot, lambda: len(agent.conversation.turns) == 2 and not agent.busy)
        assert agent.status == "idle" and agent.error is None


async def test_pool_pressure_spills_an_idle_agent_and_its_chat_continues(default_model):
    # 45 blocks: one context takes 30 (one per layer), so the idle agent is spilled to make room.
    app = make_app(default_model, agents=2, blocks=45, max_tokens=4)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        first, second = list(app.roster)
        await send(pilot, "Hi")
        await wait_for(pilot, lambda: len(first.conversation.turns) == 2)
        await pilot.press("f6")
        await send(pilot, "Hello")
        await wait_for(pilot, lambda: len(second.conversation.turns) == 2 and first.spilled)
        assert first.num_blocks == 0 and first.context_tokens > 0

        await pilot.press("shift+f6")
        await send(pilot, "And you?")  # continues the spilled context: restored, not restarted
        await wait_for(pilot, lambda: len(first.conversation.turns) == 4 and not first.busy)
        await wait_for(pilot, lambda: not first.spilled)
        assert first.status == "idle"
        engine = app.owner.engine
        context_ids = engine.agent_blocks(first.agent_id).token_ids
        assert engine.tokenizer.decode(context_ids) == first.conversation.context_text
        assert app.stats.telemetry.evictions >= 2


async def test_quitting_while_generating_stops_the_engine_thread(default_model):
    app = make_app(default_model, agents=1, max_tokens=200)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        (agent,) = list(app.roster)
        await send(pilot, "Tell me a long story.")
        await wait_for(pilot, lambda: agent.status == "generating")
        asked_s: list[float] = []  # time.time(), as telemetry stamps events
        request_stop = app.owner.request_stop
        app.owner.request_stop = lambda: (asked_s.append(time.time()), request_stop())  # type: ignore[method-assign]
        await pilot.press("ctrl+q")
    app.owner.join(timeout=WAIT_S)
    assert not app.owner.is_alive()
    # The step in flight finishes, then the thread stops: at most one more step begins (one that
    # was starting as the stop was asked), never the rest of the 200-token reply.
    steps = app.recorder.events("engine_step")
    assert len([e for e in steps if e.ts - e.ms / 1000 > asked_s[0]]) <= 1, (asked_s, steps[-3:])


async def test_unknown_model_exits_with_status_2():
    app = BlockpoolApp(TuiSettings(model="no-such-model", agents=1))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.return_code is not None, timeout_s=60)
    assert app.return_code == 2
