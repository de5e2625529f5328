"""What the side panels show and when they redraw: live token counts of each turn, and
redraws driven by the engine's stats messages, at most once per ``TuiSettings.refresh_s``.

A mixin of ``BlockpoolApp``. Its ``on_*`` handlers run after the engine link's handlers
of the same messages: Textual calls every class's handler along the MRO, in order.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from textual.css.query import NoMatches

from tui.agents import Agent, AgentRow, Roster, TurnTokens
from tui.messages import EngineStats, RequestFinished, Submitted, TokensGenerated
from tui.settings import TuiSettings
from tui.widgets import BlockMapPanel, EnginePanel, LatencyPanel
from tui.worker import EngineWorker

if TYPE_CHECKING:
    from textual.app import App
    from textual.screen import Screen

    from tui.widgets import AgentList

    _AppBase = App[None]
else:
    _AppBase = object


class PanelFeed(_AppBase):
    """Keeps ``Agent.turn`` current and redraws the agents list, pool, latency and engine panels."""

    settings: TuiSettings
    roster: Roster
    worker: EngineWorker | None
    stats: EngineStats | None
    _last_draw_s: float
    _redraw_due: bool

    if TYPE_CHECKING:  # provided by BlockpoolApp
        main_screen: Screen
        agent_list: AgentList

        @property
        def active_agent(self) -> Agent | None: ...

    def refresh_panels(self) -> None:
        """Redraw the side panels from app state (after engine stats or a change of agents, never per token)."""
        self._last_draw_s = time.monotonic()
        if not self.screen_stack:  # shutting down: the screens are gone
            return
        try:
            self._draw_panels()
        except NoMatches:  # shutting down: the widgets are gone
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

    # -- live token counts (the engine link keeps the rest of each turn) ---------------

    def on_submitted(self, message: Submitted) -> None:
        agent = self.roster.get(message.agent_id)
        if agent is not None and agent.in_flight is not None:
            agent.turn = TurnTokens(cached=agent.in_flight.base_tokens)

    def on_tokens_generated(self, message: TokensGenerated) -> None:
        for agent_id, (done, total) in message.prefill.items():
            if (agent := self.roster.get(agent_id)) is not None and agent.turn is not None:
                agent.turn = replace(agent.turn, prompt=total, prompt_done=done)
        for agent_id, num_tokens in message.num_tokens.items():
            if (agent := self.roster.get(agent_id)) is not None and agent.turn is not None:
                turn = agent.turn
                agent.turn = replace(turn, prompt_done=turn.prompt, generated=turn.generated + num_tokens)

    def on_request_finished(self, message: RequestFinished) -> None:
        if (agent := self.roster.get(message.agent_id)) is not None:
            agent.turn = TurnTokens(message.cached_tokens, message.prompt_tokens, message.prompt_tokens,
                                    message.generated_tokens)

    def on_engine_stats(self, message: EngineStats) -> None:
        """Panels redraw from the engine's (throttled) stats, at most once per ``refresh_s``."""
        if self._redraw_due:
            return
        self._redraw_due = True
        wait_s = self._last_draw_s + self.settings.refresh_s - time.monotonic()
        if wait_s > 0:
            self.set_timer(wait_s, self._due_redraw)
        else:
            self.call_later(self._due_redraw)  # after the engine link has taken the stats in

    def _due_redraw(self) -> None:
        self._redraw_due = False
        self.refresh_panels()

    def set_refresh(self, seconds: float) -> None:
        """Redraw the panels every ``seconds`` at most, from now on."""
        self.settings.refresh_s = seconds
        if self.worker is not None:
            self.worker.stats_interval_s = min(seconds, EngineWorker.STATS_INTERVAL_S)

