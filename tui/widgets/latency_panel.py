"""Gather latency: a sparkline of recent gathers (with now / average / peak), percentiles, the last gather's size."""

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
        shown = (state.gather.count, state.last_gather)
        if shown == self._shown:
            return
        self._shown = shown
        self.query_one(GatherSparkline).show(state.gather_ms)
        self.query_one(".stats", Static).update(_stats_text(state), layout=False)  # always three lines


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
    text.append(f" ms · {stats.count} gather{'' if stats.count == 1 else 's'}", style="dim")
    last = state.last_gather
    text.append("\nlast ", style="dim")
    if last is None:
        text.append("-")
    else:
        text.append(f"{last.num_blocks} blocks · {last.num_bytes / MIB:.1f} MiB · {_ms(last.ms)} ms")
    return text
