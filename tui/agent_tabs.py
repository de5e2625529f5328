"""Agents as the app shows them: opening (new, restored from the session database, at start),
showing, renaming and closing their chat tabs.

``AgentTabs`` belongs to ``BlockpoolApp`` (``app.agent_tabs``); the roster is the app's
(``app.roster``), the engine hears of a change through the owner thread's inbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import TabPane

from engine.owner_messages import Adopt, CloseAgent
from frontend.sessions import AgentRecord, AgentSummary
from tui import badges
from tui.agent_options import AgentOptions
from tui.agents import Agent, Roster
from tui.chat import ChatTurn
from tui.prompt_history import HistoryCursor
from tui.session_log import kept_turns
from tui.widgets import ChatPane

if TYPE_CHECKING:
    from tui.chats import Chats
    from tui.host import Host


class AgentTabs:
    """See the module docstring."""

    def __init__(self, host: Host, chats: Chats) -> None:
        self.host = host
        self.chats = chats

    async def open(self, name: str | None = None, *, activate: bool = True, system: str | None = None,
                   record_id: int | None = None) -> Agent:
        """A new agent, or with ``record_id`` one restored from the session database."""
        app = self.host
        system = app.settings.system if system is None else system
        if app.sessions is not None and record_id is None:
            record_id = app.sessions.new_record(name or app.roster.next_name(), system)
        agent = app.roster.open(system, name, record_id=record_id)  # its row id names its spill file
        if app.sessions is not None:
            app.sessions.agent_opened(agent.agent_id, agent.name, system, record_id)
        pane = ChatPane(agent_id=agent.agent_id, name=agent.name, colour=agent.colour,
                        history=HistoryCursor(app.prompt_history))
        await app.tabs.add_pane(TabPane(agent.name, pane, id=agent.agent_id))
        if activate:
            self.activate(agent.agent_id)
        app.refresh_panels()
        return agent

    async def restore(self, record: AgentRecord) -> Agent:
        """Reopen a saved agent with its transcript; its context is adopted by the engine."""
        app = self.host
        assert app.sessions is not None and app.owner is not None
        agent = await self.open(record.name, activate=False, system=record.system_prompt, record_id=record.id)
        if record.options:
            agent.options = AgentOptions.defaults(app.settings).with_saved(record.options)
        messages = app.sessions.messages(record)
        for user_text, reply in kept_turns(messages):
            agent.conversation.turns += [ChatTurn("user", user_text), ChatTurn("assistant", reply)]
        await app.pane(agent.agent_id).show_saved(messages)
        if record.context_tokens:
            agent.context_tokens = len(record.context_tokens)
            app.owner.send(Adopt(agent.agent_id, tuple(record.context_tokens)))
        return agent

    async def reopen(self, summary: AgentSummary) -> Agent | None:
        """An agent from the session browser, opened here with its transcript (see ``SessionLog.reopen``)."""
        app = self.host
        if app.sessions is None:
            return None
        record = app.sessions.reopen(summary, Roster.agent_id_of(summary.record.id))
        if record is None:
            return None
        agent = await self.restore(record)
        if any(other.name == agent.name for other in app.roster if other is not agent):
            where = "reopened" if summary.record.session_id == app.sessions.session_id else \
                f"session {summary.record.session_id}"
            self.rename(agent, f"{agent.name} ({where})")  # two "agent 1" tabs would read as one
        self.activate(agent.agent_id)
        note = "" if record.context_tokens or not summary.num_messages else \
            " Its context is read again on its next turn (it was saved for another model)."
        app.notify(f"{record.name}: {summary.num_messages} messages.{note}", title="Agent reopened", timeout=5)
        return agent

    async def open_session(self, saved: list[AgentRecord]) -> None:
        """The agents at start: a resumed session's (``saved``), and ``settings.agents`` new ones."""
        for record in saved:
            await self.restore(record)
        await self.open_at_start(len(saved))
        if (first := next(iter(self.host.roster), None)) is not None:
            self.activate(first.agent_id)
        self.host.refresh_panels()

    async def open_at_start(self, num_resumed: int) -> None:
        """``settings.agents`` at start; beside a resumed session's agents only when asked for explicitly."""
        app = self.host
        wanted = app.settings.agents
        if num_resumed and "agents" not in app.settings.model_fields_set:
            return  # a resumed session keeps the agents it had
        for _ in range(max(wanted - num_resumed, 0)):
            await self.open(activate=False)
        if num_resumed and wanted > num_resumed:
            app.notify(f"Resumed {num_resumed} saved agents and opened {wanted - num_resumed} more "
                       f"for agents = {wanted}.", title="Session resumed")
        elif num_resumed and wanted < num_resumed:
            app.notify(f"agents = {wanted}, but the resumed session has {num_resumed} agents: all are kept. "
                       "Close one with F4, or start afresh with --new.", title="Session resumed", timeout=10)

    def activate(self, agent_id: str) -> None:
        """Show an agent's chat and focus its composer now, so the very next key typed goes to it."""
        app = self.host
        app.tabs.active = agent_id
        composer = app.pane(agent_id).input
        # Not composer.focus(): it waits behind every key already queued, which would go to the old agent.
        app.main_screen.set_focus(composer)
        if app.focused is not composer:  # not focusable yet (being mounted): focus it when it can be
            composer.focus()

    async def shown(self, tab: TabPane) -> None:
        """A chat came on screen: its composer takes the keys, it draws what arrived meanwhile,
        its marks are cleared, and the panels highlight it."""
        app = self.host
        if not app.screen_stack:  # quitting: the screens are gone
            return
        if (agent := app.roster.get(tab.id)) is not None:
            badges.clear(app, agent)
        for pane in tab.query(ChatPane):
            pane.input.focus()
            await pane.catch_up()
        app.refresh_panels()

    def cycle(self, step: int) -> None:
        """Show the next (``step`` 1) or previous (-1) agent."""
        ids = [a.agent_id for a in self.host.roster]
        if ids:
            tabs = self.host.tabs
            current = ids.index(tabs.active) if tabs.active in ids else 0
            self.activate(ids[(current + step) % len(ids)])

    def rename(self, agent: Agent, name: str) -> None:
        app = self.host
        agent.name = name.strip()
        app.tabs.get_tab(agent.agent_id).label = badges.label(agent)
        app.pane(agent.agent_id).rename(agent.name)
        if app.sessions is not None:
            app.sessions.agent_renamed(agent.agent_id, agent.name)

    async def close(self, agent: Agent) -> None:
        app = self.host
        if app.owner is not None:
            app.owner.send(CloseAgent(agent.agent_id))
        app.roster.close(agent.agent_id)
        if app.sessions is not None:
            app.sessions.agent_closed(agent.agent_id)
        self.chats.forget(agent)
        await app.tabs.remove_pane(agent.agent_id)
        if (active := app.active_agent) is not None:
            self.activate(active.agent_id)
        app.refresh_panels()
