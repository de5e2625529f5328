"""What the app's keys ask or tell before they act: rename, an agent's settings, close (confirmed
when it holds a conversation), broadcast, export, the panels' refresh rate, help.

``Dialogs`` belongs to ``BlockpoolApp`` (``app.dialogs``); the app's ``action_*`` methods call it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from frontend.sessions import SessionStoreError
from frontend.settings import config_path
from tui.agent_options import AgentOptions
from tui.screens import AgentSettingsResult, AgentSettingsScreen, ConfirmScreen, HelpScreen, TextPromptScreen

if TYPE_CHECKING:
    from tui.agent_tabs import AgentTabs
    from tui.chats import Chats
    from tui.host import Host
    from tui.panel_feed import PanelFeed


class Dialogs:
    """See the module docstring."""

    def __init__(self, host: Host, chats: Chats, agent_tabs: AgentTabs, panels: PanelFeed) -> None:
        self.host = host
        self.chats = chats
        self.agent_tabs = agent_tabs
        self.panels = panels

    def rename(self) -> None:
        app = self.host
        agent = app.active_agent
        if agent is None:
            return

        def rename(name: str | None) -> None:
            if name and app.roster.get(agent.agent_id) is agent:
                self.agent_tabs.rename(agent, name)

        app.push_screen(TextPromptScreen(title=f"Rename {agent.name}", value=agent.name), rename)

    def agent_settings(self) -> None:
        """The shown agent's system prompt and sampling; a new system prompt starts its context afresh."""
        app = self.host
        agent = app.active_agent
        if agent is None:
            return
        options = agent.options or AgentOptions.defaults(app.settings)

        def apply(result: AgentSettingsResult | None) -> None:
            if result is None or app.roster.get(agent.agent_id) is not agent:
                return
            conversation = agent.conversation
            if result.system != conversation.system:  # it comes first: nothing after it is valid any more
                conversation.system, conversation.context_text, conversation.context_tokens = result.system, None, 0
                conversation.checkpoints = {}
            agent.options = result.options
            if app.sessions is not None:
                app.sessions.agent_options_changed(agent.agent_id, result.system, result.options.to_saved())
            app.notify(f"{agent.name}'s next turn uses them.", title="Settings saved")

        app.push_screen(AgentSettingsScreen(name=agent.name, system=agent.conversation.system, options=options,
                                            context_tokens=agent.context_tokens), apply)

    async def close(self) -> None:
        app = self.host
        agent = app.active_agent
        if agent is None:
            return
        if not agent.holds_conversation:
            await self.agent_tabs.close(agent)
            return

        async def confirmed(yes: bool | None) -> None:
            if yes and app.roster.get(agent.agent_id) is agent:
                await self.agent_tabs.close(agent)

        kept = ("its conversation stays in the session database: F9 reopens it" if app.sessions is not None
                else "nothing is saved in this run: its conversation is lost")
        question = (f"Close {agent.name}? Its {agent.context_tokens:,} tokens in {agent.num_blocks:,} blocks "
                    f"are freed; {kept}.")
        app.push_screen(ConfirmScreen(question=question, yes="Close"), confirmed)

    def broadcast(self) -> None:
        app = self.host
        if not len(app.roster):
            app.notify("No agents to broadcast to; press ctrl+n for one.", severity="warning")
            return

        async def broadcast(text: str | None) -> None:
            for agent in app.roster if text else ():
                await self.chats.send(agent, text)

        title = f"Broadcast one prompt to all {len(app.roster)} agents"
        app.push_screen(TextPromptScreen(title=title, placeholder="prompt for every agent"), broadcast)

    def export(self) -> None:
        """Write the shown agent's conversation to ``<name>.md`` in the current folder."""
        app = self.host
        agent = app.active_agent
        if agent is None or app.sessions is None:
            app.notify("Nothing to export: no agent, or conversations are not being saved.", severity="warning")
            return
        try:
            path = app.sessions.export(agent.agent_id, Path.cwd())
        except (OSError, SessionStoreError) as exc:
            app.notify(str(exc), title="Export failed", severity="error", timeout=10)
            return
        app.notify(f"Wrote {path}", title="Exported")

    def refresh_rate(self) -> None:
        """Ask for the panels' refresh interval and apply it at once."""
        app = self.host

        def apply(text: str | None) -> None:
            try:
                seconds = float(text or "")
            except ValueError:
                if text:
                    app.notify(f"{text!r} is not a number of seconds", severity="error")
                return
            if not 0.05 <= seconds <= 10.0:
                app.notify(f"refresh every {seconds:g} s is out of range: give 0.05 to 10", severity="error")
                return
            self.panels.set_refresh(seconds)
            app.notify(f"Panels redraw every {seconds:g} s at most", title="Refresh rate")

        title = "Redraw the side panels every … seconds (0.05–10)"
        app.push_screen(TextPromptScreen(title=title, value=f"{app.settings.refresh_s:g}"), apply)

    def help(self) -> None:
        app = self.host
        if not isinstance(app.screen, HelpScreen):
            hint = f"Remap keys by binding id in the [keymap] table of {config_path()}"
            app.push_screen(HelpScreen(rows=app.key_rows(), config_hint=hint))
