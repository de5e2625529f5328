"""blockpool-tui: several agent chats over one paged KV cache, with the pool drawn live.

The engine runs on ``EngineWorker``'s thread; this app only sends it commands and
handles the messages it posts (``EngineLink``); its keys' actions are in ``AppActions``.
Panels redraw from app state when the engine's (throttled) stats arrive, at most once
per ``TuiSettings.refresh_s``: never per token, and with no timer of their own.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

from rich.console import RenderableType
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, TabbedContent, TabPane

from engine import fastblas
from engine.sessions import AgentRecord, SessionStore, SessionStoreError
from telemetry import JsonlWriter, Recorder
from tui.agents import Agent, Roster
from tui.app_actions import AppActions
from tui.chat import ChatTurn, Renderer
from tui.cli import SettingsError, parse_settings
from tui.engine_factory import engine_factory as real_engine_factory
from tui.engine_link import EngineLink
from tui.fork import AgentForks
from tui.messages import ENGINE_MESSAGES, AdoptContext, CloseAgent, EngineStats
from tui.panel_feed import PanelFeed
from tui.remote.factory import remote_engine_factory
from tui.remote.messages import ServerStatus
from tui.remote.server_panels import ServerPanels
from tui.session_log import SessionLog, kept_turns, open_store
from tui.settings import TuiSettings
from tui.widgets import AgentList, BlockMapPanel, ChatPane, EnginePanel, LatencyPanel, ModelStatus
from tui.worker import EngineFactory, EngineWorker

class BlockpoolApp(EngineLink, ServerPanels, PanelFeed, AgentForks, AppActions, App[None]):
    """See the module docstring. ``engine_factory`` or ``loaded_model`` replace the model load.

    With a ``store``, conversations are saved as they happen and the last session (see
    ``TuiSettings.resume``) comes back on start; without one, nothing is saved.
    ``blas_notes``: the BLAS fallback warnings to show on start (default: this process's,
    which stderr showed only for an instant before the screen took over).
    """

    CSS_PATH = "app.tcss"
    TITLE = "blockpool-tui"
    BINDINGS = [
        Binding("ctrl+n", "new_agent", "New agent", id="new_agent"),
        Binding("f2", "rename_agent", "Rename agent", id="rename_agent"),
        Binding("f4", "close_agent", "Close agent", id="close_agent"),
        # Priority: newer composers (TextArea) take ctrl+f as "delete word right".
        Binding("ctrl+f", "fork_agent", "Fork", id="fork_agent", priority=True),
        Binding("ctrl+b", "broadcast", "Broadcast", id="broadcast"),
        Binding("escape", "cancel_reply", "Cancel reply", id="cancel_reply"),
        # Priority: the chat input would take ctrl+e as "end of line" (the end key still does that).
        Binding("ctrl+e", "export", "Export", id="export", priority=True),
        # Priority: the composer would take f6 as "select line".
        Binding("f6,ctrl+pagedown", "next_agent", "Next agent", id="next_agent", show=False, priority=True),
        Binding("shift+f6,ctrl+pageup", "prev_agent", "Previous agent", id="prev_agent", show=False,
                priority=True),
        Binding("f3", "refresh_rate", "Refresh rate", id="refresh_rate", show=False),
        Binding("f1", "help", "Help", id="help_f1"),
        # Not a priority: the composer types every "?", so this is only for focus elsewhere (the agent list).
        Binding("question_mark", "help", "Help (focus outside the message)", id="help", key_display="?",
                show=False),
    ]
    ENGINE_STOP_S = 15.0  # quitting waits this long at most for the engine to save contexts

    def __init__(
        self,
        settings: TuiSettings | None = None,
        *,
        engine_factory: EngineFactory | None = None,
        loaded_model: tuple[Any, Any] | None = None,
        store: SessionStore | None = None,
        blas_notes: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings if settings is not None else TuiSettings()
        self.blas_notes = tuple(blas_notes) if blas_notes is not None else fastblas.fallback_notes()
        warn = partial(self.notify, title="Conversation not saved", severity="error", timeout=10)
        self.sessions = SessionLog(store, self.settings, warn) if store is not None else None
        spill_dir = self.sessions.spill_dir if self.sessions is not None else None
        if engine_factory is None and self.settings.server is not None:
            engine_factory = remote_engine_factory(self.settings, self.post_message)
        self._factory = engine_factory or real_engine_factory(self.settings, loaded_model=loaded_model,
                                                              spill_dir=spill_dir)
        self.server_status: ServerStatus | None = None  # with --server: the connection, from the remote engine
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
        self._last_draw_s = 0.0
        self._redraw_due = False

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
        for note in self.blas_notes:  # not markup: a library's path or a probe's reason may hold [brackets]
            self.notify(note, title="BLAS fallback", severity="warning", timeout=30, markup=False)
        if self.settings.keymap:
            self.set_keymap(self.settings.keymap)
        if self.settings.telemetry_log is not None:
            try:
                self._telemetry_writer = JsonlWriter(self.settings.telemetry_log).attach(self.recorder)
            except OSError as exc:
                self.exit(return_code=2, message=f"blockpool-tui: error: {exc}")
                return
        self.worker = EngineWorker(factory=self._factory, post=self.post_message, recorder=self.recorder)
        self.set_refresh(self.settings.refresh_s)
        self.worker.start()
        saved = self.sessions.saved_agents() if self.sessions is not None else []
        for record in saved:
            await self.restore_agent(record)
        await self._open_start_agents(len(saved))
        if (first := next(iter(self.roster), None)) is not None:
            self.activate(first.agent_id)
        self.refresh_panels()

    async def _open_start_agents(self, num_resumed: int) -> None:
        """``settings.agents`` at start; beside a resumed session's agents only when asked for explicitly."""
        wanted = self.settings.agents
        if num_resumed and "agents" not in self.settings.model_fields_set:
            return  # a resumed session keeps the agents it had
        for _ in range(max(wanted - num_resumed, 0)):
            await self.open_agent(activate=False)
        if num_resumed and wanted > num_resumed:
            self.notify(f"Resumed {num_resumed} saved agents and opened {wanted - num_resumed} more "
                        f"for agents = {wanted}.", title="Session resumed")
        elif num_resumed and wanted < num_resumed:
            self.notify(f"agents = {wanted}, but the resumed session has {num_resumed} agents: all are kept. "
                        "Close one with F4, or start afresh with --new.", title="Session resumed", timeout=10)

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
        self.refresh_panels()
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
        """Show an agent's chat and focus its composer now, so the very next key typed goes to it."""
        self.tabs.active = agent_id
        composer = self.pane(agent_id).input
        # Not composer.focus(): it waits behind every key already queued, which would go to the old agent.
        self.main_screen.set_focus(composer)
        if self.focused is not composer:  # not focusable yet (being mounted): focus it when it can be
            composer.focus()

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
        self.refresh_panels()

    # -- widgets' messages --------------------------------------------------------

    @on(AgentList.Chosen)
    def _on_agent_chosen(self, event: AgentList.Chosen) -> None:
        self.activate(event.agent_id)

    @on(TabbedContent.TabActivated)
    async def _on_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        for pane in event.pane.query(ChatPane):
            pane.input.focus()
            await pane.catch_up()
        self.refresh_panels()  # the highlighted agent

    def exit(self, result: None = None, return_code: int = 0, message: RenderableType | None = None) -> None:
        """Stop the engine thread and drop what it still posts, then exit as usual."""
        if self.worker is not None:
            self.worker.request_stop()  # now: the shutdown below takes a while
        self.disable_messages(*ENGINE_MESSAGES, ServerStatus)
        super().exit(result, return_code, message)

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
