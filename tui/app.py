"""blockpool-tui: several agent chats over one paged KV cache, with the pool drawn live.

The engine runs on ``EngineWorker``'s thread; this app only sends it commands and
handles the messages it posts (``EngineLink``). Panels redraw from app state on a
timer, not per token.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import RenderableType
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header, TabbedContent, TabPane

from engine import fastblas
from engine.sessions import AgentRecord, SessionStore, SessionStoreError
from telemetry import JsonlWriter, Recorder
from tui.agents import Agent, AgentRow, Roster
from tui.chat import ChatTurn, Renderer
from tui.cli import SettingsError, parse_settings
from tui.commands import PALETTE, KeyRow, key_rows
from tui.engine_factory import engine_factory as real_engine_factory
from tui.engine_link import EngineLink
from tui.messages import ENGINE_MESSAGES, AdoptContext, CancelTurn, CloseAgent, EngineStats
from tui.screens import ConfirmScreen, HelpScreen, TextPromptScreen
from tui.session_log import SessionLog, kept_turns, open_store
from tui.settings import TuiSettings, config_path
from tui.widgets import AgentList, BlockMapPanel, ChatPane, EnginePanel, LatencyPanel, ModelStatus
from tui.worker import EngineFactory, EngineWorker

class BlockpoolApp(EngineLink, App[None]):
    """See the module docstring. ``engine_factory`` or ``loaded_model`` replace the model load.

    With a ``store``, conversations are saved as they happen and the last session (see
    ``TuiSettings.resume``) comes back on start; without one, nothing is saved.
    """

    CSS_PATH = "app.tcss"
    TITLE = "blockpool-tui"
    BINDINGS = [
        Binding("ctrl+n", "new_agent", "New agent", id="new_agent"),
        Binding("f2", "rename_agent", "Rename agent", id="rename_agent"),
        Binding("f4", "close_agent", "Close agent", id="close_agent"),
        Binding("ctrl+b", "broadcast", "Broadcast", id="broadcast"),
        Binding("escape", "cancel_reply", "Cancel reply", id="cancel_reply"),
        # Priority: the chat input would take ctrl+e as "end of line" (the end key still does that).
        Binding("ctrl+e", "export", "Export", id="export", priority=True),
        Binding("f6,ctrl+pagedown", "next_agent", "Next agent", id="next_agent", show=False),
        Binding("shift+f6,ctrl+pageup", "prev_agent", "Previous agent", id="prev_agent", show=False),
        # Priority, to come before the input; ChatInput leaves "?" to it only while empty.
        Binding("question_mark", "help", "Help", id="help", key_display="?", priority=True, show=False),
        Binding("f1", "help", "Help", id="help_f1"),
    ]
    PANEL_REFRESH_S = 0.25
    ENGINE_STOP_S = 15.0  # quitting waits this long at most for the engine to save contexts

    def __init__(
        self,
        settings: TuiSettings | None = None,
        *,
        engine_factory: EngineFactory | None = None,
        loaded_model: tuple[Any, Any] | None = None,
        store: SessionStore | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings if settings is not None else TuiSettings()
        warn = partial(self.notify, title="Conversation not saved", severity="error", timeout=10)
        self.sessions = SessionLog(store, self.settings, warn) if store is not None else None
        spill_dir = self.sessions.spill_dir if self.sessions is not None else None
        self._factory = engine_factory or real_engine_factory(self.settings, loaded_model=loaded_model,
                                                              spill_dir=spill_dir)
        self.roster = Roster()
        self.recorder = Recorder()
        self.worker: EngineWorker | None = None
        self.stats: EngineStats | None = None
        self.ready = False
        self.engine_started = False
        self._render_template: Renderer | None = None
        self._eos_text = ""
        self._user_messages: dict[str, Any] = {}  # agent id -> its in-flight user ChatMessage
        self._telemetry_writer: JsonlWriter | None = None
        self.engine_stop_s: float | None = None  # how long quitting waited for the engine thread
        self.startup_warnings: list[str] = []  # shown once the screen is up (e.g. a damaged database)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield AgentList(id="agents")
                yield EnginePanel(id="engine")
            with Vertical(id="center"):
                yield ModelStatus(id="model-status")
                yield TabbedContent(id="chats")
            with Vertical(id="right"):
                yield BlockMapPanel(id="block-map")
                yield LatencyPanel(id="latency")
        yield Footer()

    async def on_mount(self) -> None:
        for warning in self.startup_warnings:
            self.notify(warning, title="Session database", severity="warning", timeout=30)
        if self.settings.keymap:
            self.set_keymap(self.settings.keymap)
        if self.settings.telemetry_log is not None:
            try:
                self._telemetry_writer = JsonlWriter(self.settings.telemetry_log).attach(self.recorder)
            except OSError as exc:
                self.exit(return_code=2, message=f"blockpool-tui: error: {exc}")
                return
        self.worker = EngineWorker(factory=self._factory, post=self.post_message, recorder=self.recorder)
        self.worker.start()
        saved = self.sessions.saved_agents() if self.sessions is not None else []
        for record in saved:
            await self.restore_agent(record)
        for _ in range(0 if saved else self.settings.agents):
            await self.open_agent(activate=False)
        if (first := next(iter(self.roster), None)) is not None:
            self.activate(first.agent_id)
        self.set_interval(self.PANEL_REFRESH_S, self.refresh_panels)

    def on_unmount(self) -> None:
        if self.worker is not None:
            # A step in flight finishes, then the engine saves its contexts; the thread is a
            # daemon, so exit never hangs on it longer than this.
            self.engine_stop_s = self.worker.stop(timeout_s=self.ENGINE_STOP_S)
        if self._telemetry_writer is not None:
            self._telemetry_writer.close()

    # -- queries ------------------------------------------------------------------

    @property
    def main_screen(self) -> Screen:
        """The screen under any dialogs, holding every panel."""
        return self.screen_stack[0]

    @property
    def agent_list(self) -> AgentList:
        return self.main_screen.query_one(AgentList)

    @property
    def tabs(self) -> TabbedContent:
        return self.main_screen.query_one("#chats", TabbedContent)

    @property
    def active_agent(self) -> Agent | None:
        return self.roster.get(self.tabs.active or None)

    def pane(self, agent_id: str) -> ChatPane:
        return self.tabs.get_pane(agent_id).query_one(ChatPane)

    def refresh_panels(self) -> None:
        """Redraw the side panels from app state (on a timer, never per token)."""
        try:
            self._draw_panels()
        except NoMatches:  # the timer fired while the app was shutting down: widgets are gone
            pass

    def _draw_panels(self) -> None:
        active = self.active_agent
        self.agent_list.show([AgentRow.of(a) for a in self.roster], active.agent_id if active else None)
        names = {a.agent_id: a.name for a in self.roster}
        snapshot = self.stats.pool if self.stats is not None else None
        self.main_screen.query_one(BlockMapPanel).show(snapshot, names, self.roster.colours())
        if self.stats is not None:
            self.main_screen.query_one(LatencyPanel).show(self.stats.telemetry)
            self.main_screen.query_one(EnginePanel).show(self.stats)

    # -- agents -------------------------------------------------------------------

    async def open_agent(self, name: str | None = None, *, activate: bool = True, system: str | None = None,
                         record_id: int | None = None) -> Agent:
        """A new agent, or with ``record_id`` one restored from the session database."""
        system = self.settings.system if system is None else system
        if self.sessions is not None and record_id is None:
            record_id = self.sessions.new_record(name or self.roster.next_name(), system)
        agent = self.roster.open(system, name, record_id=record_id)  # its row id names its spill file
        if self.sessions is not None:
            self.sessions.agent_opened(agent.agent_id, agent.name, system, record_id)
        pane = ChatPane(agent_id=agent.agent_id, name=agent.name, colour=agent.colour)
        await self.tabs.add_pane(TabPane(agent.name, pane, id=agent.agent_id))
        if activate:
            self.activate(agent.agent_id)
        return agent

    async def restore_agent(self, record: AgentRecord) -> None:
        """Reopen a saved agent with its transcript; its context is adopted by the engine."""
        assert self.sessions is not None and self.worker is not None
        agent = await self.open_agent(record.name, activate=False, system=record.system_prompt, record_id=record.id)
        messages = self.sessions.messages(record)
        for user_text, reply in kept_turns(messages):
            agent.conversation.turns += [ChatTurn("user", user_text), ChatTurn("assistant", reply)]
        await self.pane(agent.agent_id).show_saved(messages)
        if record.context_tokens:
            agent.context_tokens = len(record.context_tokens)
            self.worker.send(AdoptContext(agent.agent_id, tuple(record.context_tokens)))

    def activate(self, agent_id: str) -> None:
        """Show an agent's chat and focus its input."""
        self.tabs.active = agent_id
        self.pane(agent_id).input.focus()

    async def close_agent_now(self, agent: Agent) -> None:
        if self.worker is not None:
            self.worker.send(CloseAgent(agent.agent_id))
        self.roster.close(agent.agent_id)
        if self.sessions is not None:
            self.sessions.agent_closed(agent.agent_id)
        self._user_messages.pop(agent.agent_id, None)
        await self.tabs.remove_pane(agent.agent_id)
        if (active := self.active_agent) is not None:
            self.activate(active.agent_id)

    # -- widgets' messages --------------------------------------------------------

    @on(AgentList.Chosen)
    def _on_agent_chosen(self, event: AgentList.Chosen) -> None:
        self.activate(event.agent_id)

    @on(TabbedContent.TabActivated)
    async def _on_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        for pane in event.pane.query(ChatPane):
            pane.input.focus()
            await pane.catch_up()

    # -- actions ------------------------------------------------------------------

    def exit(self, result: None = None, return_code: int = 0, message: RenderableType | None = None) -> None:
        """Stop the engine thread and drop what it still posts, then exit as usual."""
        if self.worker is not None:
            self.worker.request_stop()  # now: the shutdown below takes a while
        self.disable_messages(*ENGINE_MESSAGES)
        super().exit(result, return_code, message)

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

def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: ``blockpool-tui [options]`` (see ``--help``)."""
    fastblas.reexec_if_needed()  # before anything imports MLX
    try:
        settings = parse_settings(argv)
    except SettingsError as exc:
        print(f"blockpool-tui: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        store, warning = open_store(settings)
        app = BlockpoolApp(settings, store=store)
    except SessionStoreError as exc:
        print(f"blockpool-tui: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if warning is not None:
        print(f"blockpool-tui: warning: {warning}", file=sys.stderr)
        app.startup_warnings.append(warning)
    app.run()
    raise SystemExit(app.return_code or 0)
