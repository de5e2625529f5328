"""How blockpool-tui looks (snap_compare), driven by the scripted engine so every run is identical.

The scripted engine stands in for the model only here, to fix the text and the
timings on screen; behaviour is tested against the real model in test_tui_app.py.
Update the SVGs with ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

import tui
from telemetry import Gather, Recorder
from tests.helpers import wait_for
from tests.scripted import START_TS, scripted_app as make_scripted_app
from tui.app import BlockpoolApp
from tui.widgets import LatencyPanel

SIZE = (140, 40)
REPLIES = (
    "A **block** holds the keys and values of 16 tokens for one layer. Each agent's context is a list "
    "of blocks per layer, so contexts grow without copying.",
    "Paging means the pool hands out fixed-size blocks on demand and takes them back when a "
    "conversation closes:\n\n- no fragmentation\n- cheap to share\n- easy to count",
    "Closing an agent gives all of its blocks back to the pool at once.",
    "Hello! I am agent two. Ask me anything about the cache.",
    "Sliding-window layers keep only their last 64 tokens, so they never need more than four "
    "blocks each, while global layers keep growing with the context.",
)
POEM_REPLIES = (
    "Blocks in a pool,\nkeys in a row,\nvalues that wait\nfor the tokens to flow.\n\n- one line each\n- no run-ons",
    "Short and sweet.",
)


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch):
    # A fixed path that does not exist: the help screen shows it.
    monkeypatch.setenv("BLOCKPOOL_CONFIG", "/nonexistent/blockpool/config.toml")


def scripted_app(*, total_blocks: int = 320, agents: int = 2, replies: Sequence[str] = REPLIES) -> BlockpoolApp:
    app = make_scripted_app(replies, total_blocks=total_blocks, agents=agents, model="scripted", max_tokens=64,
                            system="You are concise.", blas_notes=())  # no BLAS notes: the same screen everywhere
    app.animation_level = "none"
    return app


async def settle(pilot: Pilot) -> None:
    """Wait for the engine to go idle and its last stats, then draw the panels once."""
    app: BlockpoolApp = pilot.app  # type: ignore[assignment]
    engine = app.owner.engine

    def final_stats() -> bool:
        """the engine idle and its stats of that moment taken in"""
        stats = app.stats
        return (app.ready and not engine.has_work() and app.owner.inbox.empty() and stats is not None
                and stats.pool == engine.pool.snapshot() and stats.telemetry == app.recorder.state())

    await wait_for(pilot, final_stats)
    for field in app.query(Input):
        field.cursor_blink = False
    for area in app.query(TextArea):
        area.cursor_blink = False
    app.refresh_panels()
    await pilot.pause()


async def say(pilot: Pilot, agent_index: int, text: str, *, held_after: int | None = None) -> None:
    """Send ``text`` from one agent's input; wait for the reply (or its first ``held_after`` words)."""
    app: BlockpoolApp = pilot.app  # type: ignore[assignment]
    agent = list(app.roster)[agent_index]
    pane = app.pane(agent.agent_id)
    app.agent_tabs.activate(agent.agent_id)
    pane.input.value = text
    await pilot.press("enter")
    if held_after is None:
        await wait_for(pilot, lambda: not agent.busy)
    else:
        await wait_for(pilot, lambda: len((pane.reply_text or "").split()) == held_after)
    await settle(pilot)


def test_main_screen_idle(snap_compare):
    assert snap_compare(scripted_app(), terminal_size=SIZE, run_before=settle)


def test_two_agents_mid_conversation(snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)
        await say(pilot, 0, "What is a KV block?")
        await say(pilot, 0, "And why page them?")
        await say(pilot, 0, "What happens when I close you?")
        await say(pilot, 1, "Hello there")
        app: BlockpoolApp = pilot.app  # type: ignore[assignment]
        second = list(app.roster)[1]
        app.owner.engine.hold_after[second.agent_id] = 9  # the reply stops mid-stream
        await say(pilot, 1, "What about sliding windows?", held_after=9)

    assert snap_compare(scripted_app(), terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("f1")

    assert snap_compare(scripted_app(), terminal_size=SIZE, run_before=run_before)


def test_error_notification_keeps_the_text(snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)
        app: BlockpoolApp = pilot.app  # type: ignore[assignment]
        pane = app.pane(list(app.roster)[0].agent_id)
        pane.input.value = "tell me everything " * 40
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.input.value != "")  # cleared on send, restored on refusal
        await settle(pilot)

    assert snap_compare(scripted_app(total_blocks=24, agents=1), terminal_size=SIZE, run_before=run_before)


def test_reply_with_line_breaks_and_one_gather(snap_compare):
    """A poem keeps its lines; the second turn's gather is the sparkline's single bar."""

    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)
        await say(pilot, 0, "A poem about blocks, please.")
        await say(pilot, 0, "Thanks!")

    app = scripted_app(agents=1, replies=POEM_REPLIES)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


class LatencyHost(App[None]):
    """The gather panel alone, fed a telemetry state with ``num_gathers`` fixed gathers."""

    CSS_PATH = Path(tui.__file__).parent / "app.tcss"

    def __init__(self, num_gathers: int) -> None:
        super().__init__()
        self.recorder = Recorder()
        for i in range(num_gathers):
            self.recorder.publish(Gather(agent_id="agent-1", num_blocks=30 + i, num_bytes=(30 + i) * 90_000,
                                         ms=1.5 + (i * 7 % 11) * (0.6 if i < 30 else 6.0), num_tokens=256,
                                         ts=START_TS + i))

    def compose(self) -> ComposeResult:
        yield LatencyPanel(id="latency")

    def on_mount(self) -> None:
        self.query_one(LatencyPanel).show(self.recorder.state())


@pytest.mark.parametrize("num_gathers", [1, 40])
def test_gather_sparkline(snap_compare, num_gathers):
    assert snap_compare(LatencyHost(num_gathers), terminal_size=(44, 10))
