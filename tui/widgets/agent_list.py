"""The list of agents: colour, name, state, live token counts, blocks held.

One small Static per agent, redrawn only when its own figures change: the counts move
several times a second while agents generate, and redrawing one row is cheap where
re-rendering a whole option list on every change cost tens of milliseconds (time the
keyboard waited for).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static

from tui.agents import AgentRow
from tui.badges import MARKS

STATUS_STYLES = {
    "idle": "dim",
    "queued": "yellow",
    "prefilling": "cyan",
    "generating": "bold green",
    "error": "bold red",
    "spilled": "magenta",
}
INDENT = "   "  # under the colour swatch


class AgentRowView(Static):
    """One agent's lines; a click chooses it."""

    def __init__(self, *, row: AgentRow) -> None:
        super().__init__(row_text(row), classes="agent-row")
        self.row = row

    def show(self, row: AgentRow) -> None:
        if row != self.row:
            text = row_text(row)
            self.update(text, layout=text.plain.count("\n") != row_text(self.row).plain.count("\n"))
            self.row = row

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(AgentList.Chosen(self.row.agent_id))


class AgentList(VerticalScroll, can_focus=True):
    """Rows come down through ``show``; choosing one (click, or up/down then Enter) posts ``AgentList.Chosen``."""

    BINDINGS = [
        Binding("up", "move(-1)", "Previous", show=False),
        Binding("down", "move(1)", "Next", show=False),
        Binding("enter", "choose", "Show chat", show=False),
    ]

    class Chosen(Message):
        def __init__(self, agent_id: str) -> None:
            super().__init__()
            self.agent_id = agent_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Agents"
        self._views: list[AgentRowView] = []
        self.highlighted: int | None = None

    @property
    def rows(self) -> list[AgentRowView]:
        return list(self._views)

    def show(self, rows: Sequence[AgentRow], active_id: str | None) -> None:
        """Redraw only the rows whose figures changed (called a few times a second)."""
        if [v.row.agent_id for v in self._views] == [r.agent_id for r in rows]:
            for view, row in zip(self._views, rows):
                view.show(row)
        else:  # agents opened or closed: rebuild the rows
            self.remove_children(self._views)
            self._views = [AgentRowView(row=row) for row in rows]
            self.mount_all(self._views)
        for index, view in enumerate(self._views):
            view.set_class(view.row.agent_id == active_id, "-active")
            if view.row.agent_id == active_id:
                self.highlighted = index

    def action_move(self, step: int) -> None:
        views = self._views
        if views:
            current = self.highlighted if self.highlighted is not None else 0
            self.highlighted = (current + step) % len(views)
            for index, view in enumerate(views):
                view.set_class(index == self.highlighted, "-highlight")
            views[self.highlighted].scroll_visible()

    def action_choose(self) -> None:
        views = self._views
        if self.highlighted is not None and self.highlighted < len(views):
            self.post_message(self.Chosen(views[self.highlighted].row.agent_id))


def row_text(row: AgentRow) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("██ ", style=row.colour)
    if row.badge is not None:
        text.append(f"{MARKS[row.badge]} ", style="bold red" if row.badge == "error" else "bold yellow")
    text.append(row.name, style="bold")
    text.append("  ")
    text.append(*_status(row))
    text.append(f"\n{INDENT}{row.context_tokens:,} tok · {row.num_blocks:,} blocks", style="dim")
    if row.turn is not None and (row.turn.prompt or row.turn.generated):
        text.append(f"\n{INDENT}{row.turn.prompt:,} prompt + {row.turn.generated:,} gen", style="dim")
    if row.num_pending:
        text.append(f"\n{INDENT}{row.num_pending} message{'' if row.num_pending == 1 else 's'} waiting",
                    style="yellow")
    if row.status == "error" and row.error:
        text.append(f"\n{INDENT}{_clip(row.error, 80)}", style="red")
    return text


def _status(row: AgentRow) -> tuple[str, str]:
    """The state word and its style: prefilling n/m, generating, queued, spilled, idle, error."""
    if row.status == "prefilling" and row.prefill is not None:
        return f"prefilling {row.prefill[0]:,}/{row.prefill[1]:,}", STATUS_STYLES["prefilling"]
    if row.status == "idle" and row.spilled:
        return "spilled", STATUS_STYLES["spilled"]  # its context waits in a file until its next turn
    return row.status, STATUS_STYLES[row.status]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
