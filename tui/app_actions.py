"""What the app's keys and palette commands do: agents, broadcast, cancel, export, help, refresh rate.

A mixin of ``BlockpoolApp``, kept apart so that the app file holds layout, start-up and
the engine's messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import SystemCommand
from textual.screen import Screen

from engine.sessions import SessionStoreError
from tui.agents import Agent, Roster
from tui.commands import PALETTE, KeyRow, key_rows
from tui.messages import CancelTurn
from tui.screens import ConfirmScreen, HelpScreen, TextPromptScreen
from tui.session_log import SessionLog
from tui.settings import TuiSettings, config_path
from tui.worker import EngineWorker

if TYPE_CHECKING:
    from textual.app import App
    from textual.widgets import TabbedContent

    from tui.widgets import ChatPane

    _AppBase = App[None]
else:
    _AppBase = object


class AppActions(_AppBase):
    """The ``action_*`` methods of ``BlockpoolApp``."""

    settings: TuiSettings
    roster: Roster
    worker: EngineWorker | None
    sessions: SessionLog | None

    if TYPE_CHECKING:  # provided by BlockpoolApp
        tabs: TabbedContent

        @property
        def active_agent(self) -> Agent | None: ...
        def pane(self, agent_id: str) -> ChatPane: ...
        def activate(self, agent_id: str) -> None: ...
        def set_refresh(self, seconds: float) -> None: ...
        async def open_agent(self, name: str | None = None) -> Agent: ...
        async def close_agent_now(self, agent: Agent) -> None: ...
        async def send(self, agent: Agent, text: str) -> None: ...

    async def action_new_agent(self) -> None:
        await self.open_agent()

    def action_rename_agent(self) -> None:
        agent = self.active_agent
        if agent is None:
            return

        def rename(name: str | None) -> None:
            if name and self.roster.get(agent.agent_id) is agent:
                agent.name = name.strip()
                self.tabs.get_tab(agent.agent_id).label = agent.name
                self.pane(agent.agent_id).rename(agent.name)
                if self.sessions is not None:
                    self.sessions.agent_renamed(agent.agent_id, agent.name)

        self.push_screen(TextPromptScreen(title=f"Rename {agent.name}", value=agent.name), rename)

    async def action_close_agent(self) -> None:
        agent = self.active_agent
        if agent is None:
            return
        if not agent.holds_conversation:
            await self.close_agent_now(agent)
            return

        async def confirmed(yes: bool | None) -> None:
            if yes and self.roster.get(agent.agent_id) is agent:
                await self.close_agent_now(agent)

        question = (f"Close {agent.name}? Its conversation ({agent.context_tokens:,} tokens in "
                    f"{agent.num_blocks:,} blocks) is dropped and the blocks are freed.")
        self.push_screen(ConfirmScreen(question=question, yes="Close"), confirmed)

    def action_broadcast(self) -> None:
        if not len(self.roster):
            self.notify("No agents to broadcast to; press ctrl+n for one.", severity="warning")
            return

        async def broadcast(text: str | None) -> None:
            for agent in self.roster if text else ():
                await self.send(agent, text)

        title = f"Broadcast one prompt to all {len(self.roster)} agents"
        self.push_screen(TextPromptScreen(title=title, placeholder="prompt for every agent"), broadcast)

    def action_cancel_reply(self) -> None:
        agent = self.active_agent
        if agent is not None and agent.busy and self.worker is not None:
            self.worker.send(CancelTurn(agent.agent_id))

    def action_export(self) -> None:
        """Write the shown agent's conversation to ``<name>.md`` in the current folder."""
        agent = self.active_agent
        if agent is None or self.sessions is None:
            self.notify("Nothing to export: no agent, or conversations are not being saved.", severity="warning")
            return
        try:
            path = self.sessions.export(agent.agent_id, Path.cwd())
        except (OSError, SessionStoreError) as exc:
            self.notify(str(exc), title="Export failed", severity="error", timeout=10)
            return
        self.notify(f"Wrote {path}", title="Exported")

    def action_next_agent(self) -> None:
        self._cycle(+1)

    def action_prev_agent(self) -> None:
        self._cycle(-1)

    def _cycle(self, step: int) -> None:
        ids = [a.agent_id for a in self.roster]
        if ids:
            current = ids.index(self.tabs.active) if self.tabs.active in ids else 0
            self.activate(ids[(current + step) % len(ids)])

    def action_refresh_rate(self) -> None:
        """Ask for the panels' refresh interval and apply it at once."""

        def apply(text: str | None) -> None:
            try:
                seconds = float(text or "")
            except ValueError:
                if text:
                    self.notify(f"{text!r} is not a number of seconds", severity="error")
                return
            if not 0.05 <= seconds <= 10.0:
                self.notify(f"refresh every {seconds:g} s is out of range: give 0.05 to 10", severity="error")
                return
            self.set_refresh(seconds)
            self.notify(f"Panels redraw every {seconds:g} s at most", title="Refresh rate")

        title = "Redraw the side panels every … seconds (0.05–10)"
        self.push_screen(TextPromptScreen(title=title, value=f"{self.settings.refresh_s:g}"), apply)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            hint = f"Remap keys by binding id in the [keymap] table of {config_path()}"
            self.push_screen(HelpScreen(rows=self.key_rows(), config_hint=hint))

    def key_rows(self) -> list[KeyRow]:
        """(keys, description, binding id) of every key, after the keymap."""
        return key_rows(self.BINDINGS, self.settings.keymap)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in PALETTE:
            yield SystemCommand(title, help_text, partial(self.run_action, action))
