"""The list of agents: colour, name, state, live token counts, blocks held."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual import on
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tui.agents import AgentRow

STATUS_STYLES = {
    "idle": "dim",
    "queued": "yellow",
    "prefilling": "cyan",
    "generating": "bold green",
    "error": "bold red",
    "spilled": "magenta",
}


class AgentList(OptionList):
    """Rows come down through ``show``; choosing one posts ``AgentList.Chosen``."""

    class Chosen(Message):
        def __init__(self, agent_id: str) -> None:
            super().__init__()
            self.agent_id = agent_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Agents"
        self._rows: tuple[AgentRow, ...] = ()
        self._active_id: str | None = None

    def show(self, rows: Sequence[AgentRow], active_id: str | None) -> None:
        """Redraw only when something changed (called a few times a second)."""
        rows = tuple(rows)
        if rows == self._rows and active_id == self._active_id:
            return
        same_agents = [r.agent_id for r in rows] == [r.agent_id for r in self._rows]
        if same_agents:  # the usual case: only figures changed; redraw just those rows
            for index, (row, old) in enumerate(zip(rows, self._rows)):
                if row != old:
                    self.replace_option_prompt_at_index(index, _prompt(row))
        else:
            self.set_options(Option(_prompt(row), id=row.agent_id) for row in rows)
        self._rows = rows
        ids = [row.agent_id for row in rows]
        if active_id in ids and (active_id != self._active_id or not same_agents):
            self.highlighted = ids.index(active_id)
        self._active_id = active_id

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Chosen(event.option.id))


def _prompt(row: AgentRow) -> Table:
    details = Text()
    details.append(row.name, style="bold")
    details.append("  ")
    details.append(*_status(row))
    details.append(f"\n{row.context_tokens:,} tok · {row.num_blocks:,} blocks", style="dim")
    if row.num_pending:
        details.append(f" · {row.num_pending} waiting", style="yellow")
    if row.turn is not None and (row.turn.prompt or row.turn.generated):
        details.append(f"\n{row.turn.prompt:,} prompt + {row.turn.generated:,} generated", style="dim")
    if row.status == "error" and row.error:
        details.append(f"\n{_clip(row.error, 80)}", style="red")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=2)
    grid.add_column(ratio=1)
    grid.add_row(Text("██", style=row.colour), details)
    return grid


def _status(row: AgentRow) -> tuple[str, str]:
    """The state word and its style: prefilling n/m, generating, queued, spilled, idle, error."""
    if row.status == "prefilling" and row.prefill is not None:
        return f"prefilling {row.prefill[0]:,}/{row.prefill[1]:,}", STATUS_STYLES["prefilling"]
    if row.status == "idle" and row.spilled:
        return "spilled", STATUS_STYLES["spilled"]  # its context waits in a file until its next turn
    return row.status, STATUS_STYLES[row.status]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
