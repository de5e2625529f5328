"""Every key of the app, with its binding id (for the config file's [keymap])."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.commands import KeyRow


class HelpScreen(ModalScreen[None]):
    """Lists the keys; any of Escape, q, ? or F1 closes it."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, *, rows: Sequence[KeyRow], config_hint: str) -> None:
        super().__init__(classes="dialog-screen")
        self.rows = tuple(rows)
        self.config_hint = config_hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help"):
            yield Static("blockpool-tui keys", classes="question")
            with VerticalScroll():
                yield Static(_table(self.rows))
            yield Static(self.config_hint, markup=False, classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)


def _table(rows: Sequence[KeyRow]) -> Table:
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("action")
    table.add_column("binding id", style="dim")
    for keys, description, binding_id in rows:
        table.add_row(keys, description, binding_id)
    return table
