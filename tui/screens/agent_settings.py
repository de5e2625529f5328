"""The settings of one agent: system prompt, temperature, top_p, max tokens, stop strings."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tui.agent_options import AgentOptions, change_cost, parse_options


@dataclass(frozen=True, slots=True)
class AgentSettingsResult:
    system: str
    options: AgentOptions


class AgentSettingsScreen(ModalScreen[AgentSettingsResult | None]):
    """Dismisses with the new settings on Enter, None on Escape; says what a change costs as
    it is typed (``context_tokens``: the agent's context now)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, *, name: str, system: str, options: AgentOptions, context_tokens: int) -> None:
        super().__init__(classes="dialog-screen")
        self.agent_name = name
        self.system = system
        self.options = options
        self.context_tokens = context_tokens

    def compose(self) -> ComposeResult:
        o = self.options
        fields = (("system", "System prompt", self.system), ("temperature", "Temperature (0 = greedy)", f"{o.temperature:g}"),
                  ("top_p", "top_p (0–1]", f"{o.top_p:g}"), ("max_tokens", "Max tokens per reply", str(o.max_tokens)),
                  ("stop", r"Stop strings (comma-separated, \n = new line)", ", ".join(s.replace("\n", r"\n") for s in o.stop)))
        with Vertical(classes="dialog"):
            yield Static(f"Settings of {self.agent_name} (from its next turn)", markup=False, classes="question")
            for field_id, label, value in fields:
                yield Label(label)
                yield Input(value, id=field_id)
            yield Static(change_cost(self.context_tokens, False), id="cost", markup=False)
            yield Static("Enter to save · Esc to cancel", classes="hint")

    def _value(self, field_id: str) -> str:
        return self.query_one(f"#{field_id}", Input).value

    @on(Input.Changed)
    def _changed(self) -> None:
        changed = self._value("system") != self.system
        self.query_one("#cost", Static).update(change_cost(self.context_tokens, changed))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            options = parse_options(self._value("temperature"), self._value("top_p"), self._value("max_tokens"),
                                    self._value("stop"))
        except ValueError as exc:
            self.query_one("#cost", Static).update(f"Not saved: {exc}")
            return
        self.dismiss(AgentSettingsResult(self._value("system"), options))

    def action_cancel(self) -> None:
        self.dismiss(None)
