"""The history panel: pool used, tok/s, queue and spills over the last minutes, one line of bars
each (five seconds a bar), with now / average / peak over the bars shown.

It redraws on its own every bucket (``BUCKET_S``), not only when stats arrive: time passes
while the engine is idle, and an idle minute must scroll by as one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.widgets import Static

from tui.history import BUCKET_S, METRICS, PanelHistory, figure
from tui.widgets.gather_sparkline import BLOCKS, bar_levels

LABEL = 8  # label column; then now / avg / peak, six characters each: 26 in all, the left column's width
COLOURS = {"pool": "magenta", "tok_s": "green", "queue": "yellow", "spills": "red"}


class HistoryPanel(Static):
    """Draws a ``PanelHistory`` (set by the app); ``clock`` is monotonic seconds."""

    def __init__(self, *, id: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(Text("no history yet", style="dim"), id=id)
        self.border_title = "History"
        self.history: PanelHistory | None = None
        self.clock = clock

    def on_mount(self) -> None:
        self.set_interval(BUCKET_S, self.redraw)

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        if self.history is None:
            return
        width = max(self.content_size.width, 10)
        now = self.clock()
        text = Text()
        text.append(f"{'':<{LABEL}}{'now':>6}{'avg':>6}{'peak':>6}"[:width], style="dim")
        shown = 0
        for metric in METRICS:
            values = self.history.series(metric.name, now, width)
            shown = max(shown, len(values))
            text.append("\n")
            text.append_text(_figures(metric.label, values, width))
            text.append("\n")
            text.append_text(_bars(values, width, COLOURS[metric.name]))
        seconds = shown * BUCKET_S
        self.border_subtitle = f"{BUCKET_S:.0f} s a bar · last {_span(seconds)}" if shown else ""
        self.update(text, layout=False)  # always the same number of lines


def _figures(label: str, values: list[float], width: int) -> Text:
    text = Text(f"{label:<{LABEL}}", style="dim")
    if values:
        for value in (values[-1], sum(values) / len(values), max(values)):
            text.append(f"{figure(value):>6}")
    text.truncate(width)
    return text


def _bars(values: list[float], width: int, colour: str) -> Text:
    levels = bar_levels(values, 1)
    return Text(" " * (width - len(values)) + "".join(BLOCKS[level] for level in levels), style=colour)


def _span(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
