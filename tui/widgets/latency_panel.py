"""Gather latency: a sparkline of recent gathers (with now / average / peak), percentiles, the last gather's size.

Each figure names its window: now / avg / peak cover the bars on screen, the percentiles
the recorder's window (its last N gathers), and the count every gather since start.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from telemetry import TelemetryState
from tui.widgets.gather_sparkline import GatherSparkline

MIB = 2**20


class LatencyPanel(Vertical):
    """Shows ``TelemetryState.gather`` (block -> cache copies before a turn)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Gather latency"
        self._shown: tuple[int, object] = (0, None)  # (gathers, last gather) drawn

    def compose(self) -> ComposeResult:
        yield GatherSparkline(classes="spark")
        yield Static(_stats_text(TelemetryState()), classes="stats")

    def show(self, state: TelemetryState) -> None:
        """Redraw only after a new gather (called a few times a second)."""
        shown = (state.gathers_total, state.last_gather)
        if shown == self._shown:
            return
        self._shown = shown
        self.query_one(GatherSparkline).show(state.gather_ms)
        self.query_one(".stats", Static).update(_stats_text(state), layout=False)  # always three lines
        self.call_after_refresh(self._label_bars)  # after layout: the sparkline's width says how many bars fit

    def on_resize(self) -> None:
        self.call_after_refresh(self._label_bars)

    def _label_bars(self) -> None:
        spark = self.query_one(GatherSparkline)
        bars = min(len(spark.samples), spark.bars_shown())
        self.border_subtitle = f"bars: last {bars}" if bars else ""


    def show_note(self, text: Text) -> None:
        """No gathers to show (a server that exposes none): ``text`` says so."""
        self._shown = (-1, None)  # a later show() draws again
        self.query_one(GatherSparkline).show(())
        self.query_one(".stats", Static).update(text)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _stats_text(state: TelemetryState) -> Text:
    stats = state.gather
    text = Text()
    for label, value in (("p50", stats.p50), ("p95", stats.p95), ("p99", stats.p99)):
        text.append(f"{label} ", style="dim")
        text.append(f"{_ms(value)}  ")
    text.append("ms", style="dim")
    text.append("\nmax ", style="dim")
    text.append(_ms(stats.max))
    total = state.gathers_total
    if stats.count < total:  # the percentiles' window no longer holds every gather: both counts, named
        text.append(f" ms · last {stats.count:,} of {total:,}", style="dim")
    else:
        text.append(f" ms · {total:,} gather{'' if total == 1 else 's'}", style="dim")
    last = state.last_gather
    text.append("\nlast ", style="dim")
    if last is None:
        text.append("-")
    else:
        text.append(f"{last.num_blocks} blocks · {last.num_bytes / MIB:.1f} MiB · {_ms(last.ms)} ms")
    return text
