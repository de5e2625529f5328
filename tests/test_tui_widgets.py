"""The chat widgets on their own: reply rendering, the message window, the gather sparkline.

No engine is needed for these: each test mounts one widget in a small app and feeds it
the data the app would.
"""

from __future__ import annotations

import asyncio

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.keys import _character_to_key
from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownBulletList, MarkdownFence, MarkdownParagraph, MarkdownTable

from telemetry import Recorder
from telemetry.events import Gather, Restore
from tests.helpers import wait_for
from tui.widgets.engine_panel import _evictions
from tui.widgets.latency_panel import LatencyPanel
from tui.widgets import ChatInput, ChatMessage, ChatPane, GatherSparkline
from tui.widgets.chat_pane import EarlierMessages
from tui.widgets.gather_sparkline import bar_levels, colour_of

pytestmark = pytest.mark.anyio
POEM = "Roses are red,\nviolets are blue,\nblocks hold the keys\nand the values too."
RICH_REPLY = POEM + "\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nx = 1\ny = 2\n```\n"


class Host(App[None]):
    def __init__(self, widget) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget


def paragraph_lines(markdown: Markdown) -> list[str]:
    first = markdown.query(MarkdownParagraph).first()
    return str(first._content).split("\n")  # the paragraph's text as drawn, before wrapping


async def test_a_newline_in_a_reply_is_a_line_break_and_blocks_still_render():
    message = ChatMessage(role="assistant", author="agent 1", colour="#e5534b", text=RICH_REPLY)
    async with Host(message).run_test(size=(80, 40)) as pilot:
        await pilot.pause()
        markdown = message.query_one(Markdown)
        assert paragraph_lines(markdown) == POEM.split("\n")
        assert len(markdown.query(MarkdownBulletList)) == 1
        assert len(markdown.query(MarkdownTable)) == 1
        fence = markdown.query_one(MarkdownFence)
        assert fence.code.strip() == "x = 1\ny = 2"


async def test_a_streamed_reply_ends_as_the_full_reply_rendered_once():
    message = ChatMessage(role="assistant", author="agent 1", colour="#e5534b")
    async with Host(message).run_test(size=(80, 40)) as pilot:
        for i in range(0, len(RICH_REPLY), 7):  # deltas cut anywhere, fences included
            await message.write(RICH_REPLY[i : i + 7])
        await message.finish(RICH_REPLY, "42 tok")
        await pilot.pause()
        markdown = message.query_one(Markdown)
        assert markdown.source == RICH_REPLY
        assert paragraph_lines(markdown) == POEM.split("\n")
        assert markdown.query_one(MarkdownFence).code.strip() == "x = 1\ny = 2"
        assert message.note == "42 tok"


async def test_a_long_chat_keeps_only_the_latest_messages_mounted():
    pane = ChatPane(agent_id="agent-1", name="agent 1", colour="#e5534b")
    async with Host(pane).run_test(size=(100, 40)) as pilot:
        for i in range(100):
            await pane.add_user(f"question {i}")
            await pane.begin_reply()
            await pane.append_reply(f"answer {i}\nsecond line")
            await pane.finish_reply(f"answer {i}\nsecond line", "3 tok")
        await pilot.pause()
        mounted = list(pane.query(ChatMessage))
        assert len(mounted) == ChatPane.MAX_MOUNTED and pane.num_messages == 200
        assert mounted[-1].text == "answer 99\nsecond line"
        earlier = pane.query_one(EarlierMessages)
        assert earlier.display and "150 earlier messages" in str(earlier.render())

        await pilot.click(EarlierMessages)
        await pilot.pause()
        mounted = list(pane.query(ChatMessage))
        assert len(mounted) == ChatPane.MAX_MOUNTED + ChatPane.SHOW_MORE and pane.num_messages == 200
        assert mounted[0].text == "question 55" and "110 earlier" in str(earlier.render())


async def test_a_next_reply_begun_while_the_last_one_finishes_keeps_its_placeholder():
    pane = ChatPane(agent_id="agent-1", name="agent 1", colour="#e5534b")
    async with Host(pane).run_test(size=(100, 40)) as pilot:
        await pane.add_user("first")
        await pane.begin_reply()
        await pane.append_reply("one")
        # The app's message handlers interleave at awaits: the next turn's placeholder can be begun
        # while the finished reply is still being drawn.
        await asyncio.gather(pane.finish_reply("one", "1 tok"), pane.begin_reply())
        await pilot.pause()
        assert pane.reply_text == ""  # the new placeholder is still the pane's reply
        pane.reply_status("generating")
        await pane.append_reply("two")
        assert [m.text for m in pane.query(ChatMessage)] == ["first", "one", "two"]


def test_sparkline_scale_is_honest():
    assert bar_levels([2.0], height=3) == [24]  # one sample: one bar
    assert bar_levels([1.0, 2.0, 4.0], height=3) == [6, 12, 24]  # from zero, not from the minimum
    assert bar_levels([3.0] * 5, height=2) == [16] * 5
    assert bar_levels([0.0, 100.0], height=1) == [0, 8]
    assert bar_levels([0.01, 100.0], height=1) == [1, 8]  # anything measured shows
    assert [colour_of(ms) for ms in (2.0, 20.0, 80.0)] == ["green", "yellow", "red"]


@pytest.mark.parametrize("num_samples", [1, 40])
async def test_sparkline_draws_one_bar_per_sample_with_now_average_peak(num_samples):
    sparkline = GatherSparkline()
    sparkline.styles.height = 3
    sparkline.styles.width = 40
    async with Host(sparkline).run_test(size=(60, 10)) as pilot:
        samples = [1.0 + (i % 5) for i in range(num_samples)]
        sparkline.show(samples)
        await pilot.pause()
        rows = str(sparkline.render()).split("\n")
        bars = 40 - 13
        bottom = rows[-1][:bars]
        assert len(bottom.strip()) == min(num_samples, bars)  # one column per sample, newest on the right
        assert rows[0].endswith(f"now  {samples[-1]:.2f}ms")
        assert f"avg  {sum(samples[-bars:]) / len(samples[-bars:]):.2f}ms" in rows[1]
        assert f"peak {max(samples):.2f}ms" in rows[2]


class ComposerHost(Host):
    def __init__(self, widget) -> None:
        super().__init__(widget)
        self.submitted: list[str] = []

    def on_chat_input_submitted(self, event: ChatInput.Submitted) -> None:
        self.submitted.append(event.value)


async def test_a_burst_of_characters_and_editing_keys_lands_in_order():
    composer = ChatInput(placeholder="message")
    app = ComposerHost(composer)
    async with app.run_test(size=(80, 10)) as pilot:
        composer.focus()
        await pilot.pause()
        keys = [*"abc", "backspace", "d", "ctrl+j", "e", "left", "x", *"?!"]
        for key in keys:  # posted at once, before the composer handled the first
            character = key if len(key) == 1 else "\n" if key == "ctrl+j" else None
            app.post_message(events.Key(_character_to_key(key) if len(key) == 1 else key, character))
        await wait_for(pilot, lambda: composer.text == "abd\nx?!e", 10)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.submitted == ["abd\nx?!e"] and composer.text == "", 10)


async def test_the_gather_panel_names_each_figures_window():
    """now/avg/peak cover the bars on screen, the percentiles the recorder's window, the count every gather."""
    recorder = Recorder(window=16)
    for i in range(50):
        recorder.publish(Gather(agent_id="a", num_blocks=3, num_bytes=3 * 90_000, ms=1.0 + i % 3, num_tokens=256))
    panel = LatencyPanel()
    panel.styles.width = 40
    async with Host(panel).run_test(size=(60, 12)) as pilot:
        panel.show(recorder.state())
        await pilot.pause()
        stats = str(panel.query_one(".stats").render())
        assert "· last 16 of 50" in stats  # the percentiles' window and the total, once they differ
        bars = panel.query_one(GatherSparkline).bars_shown()
        assert panel.border_subtitle == f"bars: last {min(16, bars)}"


def test_the_engine_panel_tells_disk_restores_from_re_reads():
    assert _evictions(0, 0, 0) == "0 (0 back)"
    assert _evictions(3, 2, 2) == "3 (2 from disk)"
    assert _evictions(3, 3, 1) == "3 (1 from disk, 2 re-read)"  # a spill file that was unusable: its tokens re-read


def test_telemetry_counts_restores_by_source_and_every_gather():
    recorder = Recorder(window=4)
    for source in ("disk", "prefill", "disk"):
        recorder.publish(Restore(agent_id="a", num_blocks=1, num_bytes=1, ms=1.0, num_tokens=1, source=source))
    for _ in range(6):
        recorder.publish(Gather(agent_id="a", num_blocks=1, num_bytes=1, ms=1.0, num_tokens=1))
    state = recorder.state()
    assert (state.restores, state.restores_from_disk) == (3, 2)
    assert (state.gather.count, state.gathers_total) == (4, 6)
