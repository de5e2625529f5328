"""When the side panels redraw, and what they show: the agents list, the block map, the gather
latency and the engine figures (or what a server exposes instead).

``PanelFeed`` belongs to ``BlockpoolApp`` (``app.panels``). The app's ``stats`` reactive asks
it for a redraw each time the owner thread's (throttled) stats arrive; it redraws at most once
per ``TuiSettings.refresh_s``, never per token, and with no timer of its own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual.css.query import NoMatches

from engine.owner_thread import EngineOwner
from tui.agents import AgentRow
from tui.remote.server_panels import draw_server_panels
from tui.widgets import AgentList, BlockMapPanel, EnginePanel, HistoryPanel, LatencyPanel

if TYPE_CHECKING:
    from tui.host import Host


class PanelFeed:
    """See the module docstring. ``redraw_due``: stats arrived that are not drawn yet."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.redraw_due = False
        self._last_draw_s = 0.0

    def refresh(self) -> None:
        """Redraw the side panels from app state now (after a change of agents, or when due)."""
        self._last_draw_s = time.monotonic()
        if not self.host.screen_stack:  # shutting down: the screens are gone
            return
        try:
            self._draw()
        except NoMatches:  # shutting down: the widgets are gone
            pass

    def stats_arrived(self) -> None:
        """Redraw for new stats, at most once per ``refresh_s``."""
        if self.redraw_due:
            return
        self.redraw_due = True
        wait_s = self._last_draw_s + self.host.settings.refresh_s - time.monotonic()
        if wait_s > 0:
            self.host.set_timer(wait_s, self._due)
        else:
            self.host.call_later(self._due)

    def set_refresh(self, seconds: float) -> None:
        """Redraw the panels every ``seconds`` at most, from now on; the engine's stats follow."""
        self.host.settings.refresh_s = seconds
        if self.host.owner is not None:
            self.host.owner.stats_interval_s = min(seconds, EngineOwner.STATS_INTERVAL_S)

    def _due(self) -> None:
        self.redraw_due = False
        self.host.refresh_panels()

    def _draw(self) -> None:
        app = self.host
        screen, roster, stats = app.main_screen, app.roster, app.stats
        active = app.active_agent
        screen.query_one(AgentList).show([AgentRow.of(a) for a in roster], active.agent_id if active else None)
        names = {a.agent_id: a.name for a in roster}
        screen.query_one(BlockMapPanel).show(stats.pool if stats is not None else None, names, roster.colours())
        if stats is not None:
            screen.query_one(LatencyPanel).show(stats.telemetry)
            screen.query_one(EnginePanel).show(stats)
            screen.query_one(HistoryPanel).redraw()
        if app.server_status is not None:
            draw_server_panels(screen, app.server_status)
