"""What the app's parts (``Chats``, ``AgentTabs``, ``Forks``, ``Dialogs``, ``PanelFeed``) use of
``BlockpoolApp``: its state and its screen, never another part (each part is handed the parts
it calls when it is made).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from textual.screen import Screen
    from textual.widget import Widget
    from textual.widgets import TabbedContent

    from engine.owner_messages import EngineStats
    from engine.owner_thread import EngineOwner
    from tui.agents import Agent, Roster
    from tui.commands import KeyRow
    from tui.prompt_history import PromptHistory
    from tui.remote.messages import ServerStatus
    from tui.session_log import SessionLog
    from tui.settings import TuiSettings
    from tui.widgets import ChatPane


class Host(Protocol):
    settings: TuiSettings
    roster: Roster
    sessions: SessionLog | None
    prompt_history: PromptHistory
    owner: EngineOwner | None
    stats: EngineStats | None
    server_status: ServerStatus | None

    @property
    def screen(self) -> Screen: ...
    @property
    def screen_stack(self) -> list[Screen]: ...
    @property
    def main_screen(self) -> Screen: ...
    @property
    def focused(self) -> Widget | None: ...
    @property
    def tabs(self) -> TabbedContent: ...
    @property
    def active_agent(self) -> Agent | None: ...

    def pane(self, agent_id: str) -> ChatPane: ...
    def refresh_panels(self) -> None: ...
    def key_rows(self) -> list[KeyRow]: ...
    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = True) -> None: ...
    def push_screen(self, screen: Screen[Any], callback: Callable[[Any], Any] | None = None) -> Any: ...
    def set_timer(self, delay: float, callback: Callable[[], Any]) -> Any: ...
    def call_later(self, callback: Callable[[], Any]) -> bool: ...
    def bell(self) -> None: ...
