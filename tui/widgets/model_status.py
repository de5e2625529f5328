"""Model loading progress, shown until the engine is ready."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


class ModelStatus(Horizontal):
    """A label and a progress bar (no ETA: it would make a clock)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)

    def compose(self) -> ComposeResult:
        yield Label("loading model…", classes="text")
        yield ProgressBar(total=100, show_eta=False)

    def show(self, text: str, fraction: float) -> None:
        self.query_one(Label).update(text)
        self.query_one(ProgressBar).update(progress=round(100 * min(max(fraction, 0.0), 1.0)))
