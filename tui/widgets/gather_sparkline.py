"""A sparkline of recent gathers with an honest scale, plus now / average / peak beside it.

One sample is one bar (a single gather draws a single bar, not a wall of them), the
newest on the right. Heights run from zero to the peak of the bars shown, so a flat
series of equal gathers reads as equal bars and the peak beside it gives the scale.
Bars are coloured by threshold, as btop and asitop colour theirs.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

BLOCKS = " ▁▂▃▄▅▆▇█"
LABEL_WIDTH = 13  # " peak 123.4ms"
# Gather latency that delays a turn noticeably: below FAST_MS is green, above SLOW_MS red.
FAST_MS = 10.0
SLOW_MS = 50.0


def colour_of(ms: float) -> str:
    return "green" if ms < FAST_MS else "yellow" if ms < SLOW_MS else "red"


def bar_levels(samples: Sequence[float], height: int) -> list[int]:
    """Each sample's height in eighths of a row (0..8*height), scaled so the peak fills the height."""
    peak = max(samples, default=0.0)
    if peak <= 0:
        return [0] * len(samples)
    full = 8 * height
    return [max(1, round(full * value / peak)) if value > 0 else 0 for value in samples]


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


class GatherSparkline(Widget):
    """Data comes down through ``show``; draws ``size.height`` rows of bars and three figures."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.samples: tuple[float, ...] = ()

    def show(self, samples: Sequence[float]) -> None:
        samples = tuple(samples)
        if samples != self.samples:
            self.samples = samples
            self.refresh()

    def bars_shown(self) -> int:
        """How many samples fit on screen: the window now / avg / peak cover."""
        return max(self.size.width - LABEL_WIDTH, 1)

    def render(self) -> Text:
        height = max(self.size.height, 1)
        width = self.bars_shown()
        shown = self.samples[-width:]
        levels = bar_levels(shown, height)
        labels = self._labels(shown)
        text = Text()
        for row in range(height):
            floor = 8 * (height - 1 - row)  # eighths below this row
            text.append(" " * (width - len(shown)))
            for value, level in zip(shown, levels):
                text.append(BLOCKS[min(max(level - floor, 0), 8)], style=colour_of(value))
            text.append_text(labels[row] if row < len(labels) else Text())
            if row < height - 1:
                text.append("\n")
        return text

    def _labels(self, shown: Sequence[float]) -> list[Text]:
        if not shown:
            return [Text(" none yet", style="dim")]  # fits LABEL_WIDTH: a longer text wraps
        figures = (("now", shown[-1]), ("avg", sum(shown) / len(shown)), ("peak", max(shown)))
        labels = []
        for name, value in figures:
            label = Text(f" {name:<4} ", style="dim")
            label.append(_ms(value), style=colour_of(value))
            label.append("ms", style="dim")
            labels.append(label)
        return labels
