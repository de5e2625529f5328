"""blockpool-tui: several agent chats over one paged KV cache, with the pool drawn live.

The engine runs on its owner thread (``engine.owner_thread``), which posts each of its
events as one ``EngineEvent``; ``on_engine_event`` hands each to the one object that owns
what it changes: ``chats`` (turns), ``forks``, the ``stats`` reactive (the panels, through
``panels``). Agents' tabs are ``agent_tabs``', the dialogs of the keys ``dialogs``'. Panels
redraw from app state when the engine's (throttled) stats arrive, at most once per
``TuiSettings.refresh_s``: never per token, and with no timer of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from rich.console import RenderableType
from textual import events, on
from textual.app import App, ComposeResult, SystemCommand
from textual.command import CommandPalette
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, TabbedContent

from engine import fastblas
from engine.factory import EngineFactory
from engine import owner_messages as ev
from engine.owner_thread import EngineOwner
from frontend.sessions import AgentSummary as SavedAgent, SessionStore
from telemetry import JsonlWriter, Recorder
from tui.agent_tabs import AgentTabs
from tui.agents import Agent, Roster
from tui.chats import Chats
from tui.commands import KEY_BINDINGS, PALETTE, KeyRow, key_rows
from tui.dialogs import Dialogs
from tui.finders import AgentBrowser, PromptSearch
from tui.forks import Forks
from tui.history import PanelHistory
from tui.messages import EngineEvent
from tui.panel_feed import PanelFeed
from tui.prompt_history import PromptHistory
from tui.rewinds import Rewinds
from tui.remote.factory import tui_engine_factory
from tui.remote.messages import ServerStatus
from tui.remote.server_panels import connection_title
from tui.session_log import SessionLog
from tui.settings import TuiSettings
from tui.units import pool_description
from tui.widgets import AgentList, BlockMapPanel, ChatPane, EnginePanel, HistoryPanel, LatencyPanel, ModelStatus


HISTORY_MIN_ROWS = 40  # the history panel shows in terminals at least this tall

# The app's own keys but help: none of them means anything while a dialog is open.
CHAT_ACTIONS = frozenset(b.action.split("(")[0] for b in KEY_BINDINGS if b.action != "help")  # type: ignore[union-attr]


class BlockpoolApp(App[None]):
    """See the module docstring. ``engine_factory`` or ``loaded_model`` replace the model load.

    With a ``store``, conversations are saved as they happen and the last session (see
    ``TuiSettings.resume``) comes back on start; without one, nothing is saved.
    ``blas_notes``: the BLAS fallback warnings to show on start (default: this process's,
    which stderr showed only for an instant before the screen took over).
    """

    CSS_PATH = "app.tcss"
    TITLE = "blockpool-tui"
    BINDINGS = KEY_BINDINGS
    ENGINE_STOP_S = 15.0  # quitting waits this long at most for the engine to save contexts

    # repaint=False: a reactive on the App repaints the whole screen on every change (every
    # stats event, several a second while agents stream); the panels redraw what changed.
    stats: reactive[ev.EngineStats | None] = reactive(None, always_update=True, init=False, repaint=False)
    """The engine's latest stats (pool, telemetry, queue): each one asks the panels for a redraw."""
    server_status: reactive[ServerStatus | None] = reactive(None, always_update=True, init=False, repaint=False)
    """With ``--server``: the connection and what the server exposes, from the remote engine."""

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
        self.prompt_history = PromptHistory(store.recent_prompts() if store is not None else ())
        spill_dir = self.sessions.spill_dir if self.sessions is not None else None
        self._factory = engine_factory or tui_engine_factory(self.settings, spill_dir=spill_dir,
                                                             loaded_model=loaded_model, post=self.post_message)
        self.roster = Roster()
        self.recorder = Recorder()
        self.owner: EngineOwner | None = None
        self.chats = Chats(self)
        self.agent_tabs = AgentTabs(self, self.chats)
        self.forks = Forks(self, self.chats, self.agent_tabs)
        self.rewinds = Rewinds(self, self.chats, self.forks)
        self.panels = PanelFeed(self)
        self.panel_history = PanelHistory()  # the history panel's buckets, fed by every stats snapshot
        self.clock: Callable[[], float] = time.monotonic  # the history's time (fixed in snapshot tests)
        self.dialogs = Dialogs(self, self.chats, self.agent_tabs, self.panels)
        self._telemetry_writer: JsonlWriter | None = None
        self.engine_stop_s: float | None = None  # how long quitting waited for the engine thread
        self.startup_warnings: list[str] = []  # shown once the screen is up (e.g. a damaged database)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield AgentList(id="agents")
                yield EnginePanel(id="engine")
                yield HistoryPanel(id="history", clock=lambda: self.clock())
            with Vertical(id="center"):
                yield ModelStatus(id="model-status")
                yield TabbedContent(id="chats")
            with Vertical(id="right"):
                yield BlockMapPanel(id="block-map")
                yield LatencyPanel(id="latency")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one(HistoryPanel).history = self.panel_history
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
        self.owner = EngineOwner(factory=self._factory, on_event=self._post_engine_event, recorder=self.recorder)
        self.panels.set_refresh(self.settings.refresh_s)
        self.owner.start()
        await self.agent_tabs.open_session(self.sessions.saved_agents() if self.sessions is not None else [])

    def on_resize(self, event: events.Resize) -> None:
        # A short terminal keeps its rows for the agents and the engine figures; the graphs come back when it grows.
        for panel in self.main_screen.query(HistoryPanel):
            panel.display = event.size.height >= HISTORY_MIN_ROWS

    def _post_engine_event(self, event: ev.OwnerEvent) -> None:
        """The owner thread's ``on_event``: ``post_message`` is thread-safe."""
        self.post_message(EngineEvent(event))

    def on_unmount(self) -> None:
        if self.owner is not None:
            # A step in flight finishes, then the engine saves its contexts (a daemon thread: never longer).
            self.engine_stop_s = self.owner.stop(timeout_s=self.ENGINE_STOP_S)
        if self._telemetry_writer is not None:
            self._telemetry_writer.close()

    def exit(self, result: None = None, return_code: int = 0, message: RenderableType | None = None) -> None:
        """Stop the engine thread and drop what it still posts, then exit as usual."""
        if self.owner is not None:
            self.owner.request_stop()  # now: the shutdown below takes a while
        self.disable_messages(EngineEvent, ServerStatus)
        super().exit(result, return_code, message)

    # -- queries ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """An engine is up and takes turns."""
        return self.chats.ready

    @property
    def main_screen(self) -> Screen:
        """The screen under any dialogs, holding every panel."""
        return self.screen_stack[0]

    @property
    def tabs(self) -> TabbedContent:
        return self.main_screen.query_one("#chats", TabbedContent)

    @property
    def active_agent(self) -> Agent | None:
        return self.roster.get(self.tabs.active or None)

    def pane(self, agent_id: str) -> ChatPane:
        return self.tabs.get_pane(agent_id).query_one(ChatPane)

    def refresh_panels(self) -> None:
        """Redraw the side panels from app state now."""
        self.panels.refresh()

    def key_rows(self) -> list[KeyRow]:
        """(keys, description, binding id) of every key, after the keymap."""
        return key_rows(self.BINDINGS, self.settings.keymap)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The chat's keys wait while a dialog is open: its fields take them (ctrl+e is "end of
        line" there, not an export into the working directory)."""
        if isinstance(self.screen, ModalScreen) and action in CHAT_ACTIONS:
            return False
        return True

    # -- the engine's events, each handled once ----------------------------------------------

    async def on_engine_event(self, message: EngineEvent) -> None:
        match message.event:
            case ev.EngineLoading(text=text, fraction=fraction):
                self.main_screen.query_one(ModelStatus).show(text, fraction)
            case ev.EngineReady() as ready:
                await self._engine_ready(ready)
            case ev.EngineFailed() as failed:
                if not self.chats.engine_started:
                    self.exit(return_code=2, message=f"blockpool-tui: error: {failed.error}")
                    return
                await self.chats.engine_failed(failed)
            case ev.RequestAccepted() as accepted:
                self.chats.accepted(accepted)
            case ev.RequestRefused() as refused:
                await self.chats.refused(refused)
            case ev.TokensGenerated() as step:
                await self.chats.tokens(step)
            case ev.RequestEnded() as ended:
                await self.chats.ended(ended)
            case ev.ContextAdopted() as adopted:
                self.chats.adopted(adopted)
            case ev.Forked() as forked:
                self.forks.forked(forked)
            case ev.ForkFailed() as failed_fork:
                self.forks.fork_failed(failed_fork)
            case ev.Truncated() | ev.TruncateFailed() as rolled_back:
                await self.rewinds.answered(rolled_back)
            case ev.EngineStats() as stats:
                self.stats = stats

    async def _engine_ready(self, ready: ev.EngineReady) -> None:
        description = f"server {self.settings.server}" if self.settings.server else pool_description(ready.pool)
        self.sub_title = f"{self.settings.model_name} · {description}"
        self._show_connection()
        self.main_screen.query_one(ModelStatus).display = False
        await self.chats.engine_ready(ready)  # sends what was queued meanwhile

    def on_server_status(self, message: ServerStatus) -> None:
        self.server_status = message

    def watch_stats(self, stats: ev.EngineStats | None) -> None:
        if stats is not None:
            self.panel_history.observe(stats, self.clock())
            self.chats.take_stats(stats)
            self.panels.stats_arrived()

    def watch_server_status(self) -> None:
        self._show_connection()
        self.refresh_panels()

    def _show_connection(self) -> None:
        if (status := self.server_status) is not None:
            self.sub_title = connection_title(self.settings.model, status)

    # -- the widgets' messages -----------------------------------------------------------------

    @on(AgentList.Chosen)
    def _on_agent_chosen(self, event: AgentList.Chosen) -> None:
        self.agent_tabs.activate(event.agent_id)

    @on(TabbedContent.TabActivated)
    async def _on_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        await self.agent_tabs.shown(event.pane)

    async def on_chat_pane_sent(self, event: ChatPane.Sent) -> None:
        if (agent := self.roster.get(event.agent_id)) is not None:
            await self.chats.send(agent, event.text)

    async def on_chat_pane_turn_chosen(self, event: ChatPane.TurnChosen) -> None:
        await self.rewinds.turn_chosen(event.agent_id, event.turn_index, event.action)

    # -- the keys' actions ---------------------------------------------------------------------

    async def action_new_agent(self) -> None:
        await self.agent_tabs.open()

    def action_rename_agent(self) -> None:
        self.dialogs.rename()

    def action_agent_settings(self) -> None:
        self.dialogs.agent_settings()

    async def action_close_agent(self) -> None:
        await self.dialogs.close()

    async def action_fork_agent(self) -> None:
        await self.forks.fork_active()

    async def action_regenerate(self) -> None:
        await self.rewinds.regenerate_active()

    async def action_edit_last(self) -> None:
        await self.rewinds.edit_active()

    def action_broadcast(self) -> None:
        self.dialogs.broadcast()

    def action_cancel_reply(self) -> None:
        if (agent := self.active_agent) is not None:
            self.chats.cancel(agent)

    def action_export(self) -> None:
        self.dialogs.export()

    def action_cycle_agent(self, step: int) -> None:
        self.agent_tabs.cycle(step)

    def action_refresh_rate(self) -> None:
        self.dialogs.refresh_rate()

    def action_help(self) -> None:
        self.dialogs.help()

    def action_find_prompt(self) -> None:
        self.push_screen(CommandPalette(providers=[PromptSearch], placeholder="Search your earlier messages…"))

    def action_browse_agents(self) -> None:
        if self.sessions is None:
            self.notify("Nothing is saved in this run (no session database), so there is nothing to reopen.",
                        title="No saved agents", severity="warning")
            return
        self.push_screen(CommandPalette(providers=[AgentBrowser],
                                        placeholder="Reopen an agent: search names and messages…"))

    def recall_prompt(self, text: str) -> None:
        """An earlier message chosen in the search: into the shown agent's composer, to edit or send."""
        if (agent := self.active_agent) is not None:
            composer = self.pane(agent.agent_id).input
            composer.value = text
            composer.focus()

    def reopenable_agents(self, text: str) -> list[SavedAgent]:
        return self.sessions.reopenable(text) if self.sessions is not None else []

    async def reopen_agent(self, summary: SavedAgent) -> None:
        await self.agent_tabs.reopen(summary)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in PALETTE:
            yield SystemCommand(title, help_text, partial(self.run_action, action))

