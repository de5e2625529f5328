"""The app's side of the engine conversation: sending turns, and the messages the engine thread posts.

A mixin of ``BlockpoolApp``, kept apart so that the app file holds layout and keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tui.agents import Agent, Roster
from tui.chat import Renderer, TurnOutcome, plan_turn, record_failure, record_turn
from tui.messages import (
    ContextAdopted,
    EngineFailed,
    EngineReady,
    EngineStats,
    ModelLoading,
    RequestFailed,
    RequestFinished,
    Submitted,
    SubmitFailed,
    SubmitTurn,
    TokensGenerated,
)
from tui.session_log import SessionLog
from tui.settings import TuiSettings
from tui.widgets import ChatPane, ModelStatus
from tui.worker import EngineWorker

if TYPE_CHECKING:
    from textual.app import App
    from textual.screen import Screen
    from textual.widgets import TabbedContent

    _AppBase = App[None]
else:
    _AppBase = object

FINISH_NOTES = {"stop": "", "length": "max tokens reached", "cancelled": "cancelled"}


class EngineLink(_AppBase):
    """Turns typed messages into engine commands and engine messages into chat updates."""

    settings: TuiSettings
    roster: Roster
    worker: EngineWorker | None
    stats: EngineStats | None
    ready: bool
    engine_started: bool  # an engine was ready once: a later failure is recovered, not fatal
    sessions: SessionLog | None
    _render_template: Renderer | None
    _eos_text: str
    _user_messages: dict[str, Any]  # agent id -> its in-flight user ChatMessage

    if TYPE_CHECKING:  # provided by BlockpoolApp
        main_screen: Screen
        tabs: TabbedContent

        def pane(self, agent_id: str) -> ChatPane: ...

    # -- sending ------------------------------------------------------------------

    async def on_chat_pane_sent(self, event: ChatPane.Sent) -> None:
        agent = self.roster.get(event.agent_id)
        if agent is not None:
            await self.send(agent, event.text)

    async def send(self, agent: Agent, text: str) -> None:
        """Send now if the agent is free, else queue visibly; blank text is ignored."""
        if not text.strip():
            return
        pane = self.pane(agent.agent_id)  # the composer cleared itself when Enter was pressed
        if agent.busy or agent.pending or not self.ready:
            agent.pending.append(text)
            await pane.add_queued(text)
            return
        await self._submit(agent, text)

    async def _submit(self, agent: Agent, text: str) -> None:
        assert self.worker is not None and self._render_template is not None
        plan = plan_turn(agent.conversation, text, self._render_template)
        agent.in_flight, agent.status, agent.error, agent.prefill = plan, "queued", None, None
        pane = self.pane(agent.agent_id)
        self._user_messages[agent.agent_id] = await pane.add_user(text)
        await pane.begin_reply()
        if self.sessions is not None:
            self.sessions.turn_began(agent.agent_id, text)
        self.worker.send(SubmitTurn(agent.agent_id, text, plan.prompt, plan.continues,
                                    self.settings.max_tokens, self.settings.temperature))

    async def _send_next(self, agent: Agent) -> None:
        if agent.pending and not agent.busy and self.ready and self.roster.get(agent.agent_id) is agent:
            text = agent.pending.popleft()
            await self.pane(agent.agent_id).pop_queued()
            await self._submit(agent, text)

    # -- messages from the engine thread ----------------------------------------

    def on_model_loading(self, message: ModelLoading) -> None:
        self.main_screen.query_one(ModelStatus).show(message.text, message.fraction)

    async def on_engine_ready(self, message: EngineReady) -> None:
        self.ready = self.engine_started = True
        self._render_template, self._eos_text = message.render, message.eos_text
        self.sub_title = f"{self.settings.model or 'SmolLM2-135M-Instruct'} · {message.description}"
        self.main_screen.query_one(ModelStatus).display = False
        for agent in self.roster:
            await self._send_next(agent)

    async def on_engine_failed(self, message: EngineFailed) -> None:
        """End the turns the engine lost, give queued messages back; it restarts, or the app says what to do."""
        if not self.engine_started:
            self.exit(return_code=2, message=f"blockpool-tui: error: {message.error}")
            return
        self.ready = False
        lost = set(message.agent_ids) if message.restarting else {a.agent_id for a in self.roster if a.busy}
        for agent in self.roster:
            if agent.agent_id in lost and agent.in_flight is not None:
                await self._fail_turn(agent, message.error, agent.in_flight.base_tokens)
            await self._unqueue(agent)
        then = ("restarting it; every conversation is kept, send again when it is ready" if message.restarting
                else "it cannot go on: quit (ctrl+q) and start again; conversations are saved")
        self.notify(f"{message.error}. {then}", title="Engine failed", severity="error", timeout=30)

    async def _unqueue(self, agent: Agent) -> None:
        """Queued messages go back into the agent's input, oldest first."""
        pane = self.pane(agent.agent_id)
        if agent.pending:
            pane.input.value = " ".join(filter(None, [pane.input.value, *agent.pending]))
        while agent.pending:
            agent.pending.popleft()
            await pane.pop_queued()

    def on_submitted(self, message: Submitted) -> None:
        if (agent := self.roster.get(message.agent_id)) is not None and agent.status == "queued":
            self.pane(agent.agent_id).reply_status("queued in the engine")

    async def on_submit_failed(self, message: SubmitFailed) -> None:
        agent = self.roster.get(message.agent_id)
        if agent is None:
            return
        self.notify(message.error, title=f"{agent.name}: not sent", severity="error", timeout=10)
        if self.sessions is not None:
            self.sessions.turn_ended(agent.agent_id, "", "error", finish_reason=message.error)
        pane = self.pane(agent.agent_id)
        pane.restore_input(message.text)
        if agent.in_flight is not None:
            record_failure(agent.conversation, agent.in_flight, agent.context_tokens)
        agent.in_flight, agent.status = None, "idle"
        await pane.drop_turn(self._user_messages.pop(agent.agent_id, None))

    async def on_tokens_generated(self, message: TokensGenerated) -> None:
        for agent_id, (done, total) in message.prefill.items():
            if (agent := self.roster.get(agent_id)) is not None and agent.busy:
                agent.status, agent.prefill = "prefilling", (done, total)
                self.pane(agent_id).reply_status(f"reading prompt {done}/{total}")
        for agent_id, text in message.text.items():
            if (agent := self.roster.get(agent_id)) is not None and agent.busy:
                if agent.status != "generating":
                    agent.status, agent.prefill = "generating", None
                    self.pane(agent_id).reply_status("")
                # Only the chat on screen re-renders per step; the others catch up when shown.
                await self.pane(agent_id).append_reply(text, on_screen=agent_id == self.tabs.active)

    async def on_request_finished(self, message: RequestFinished) -> None:
        agent = self.roster.get(message.agent_id)
        if agent is None or agent.in_flight is None:
            return
        outcome = TurnOutcome(message.text, message.finish_reason, message.cached_tokens, message.prompt_tokens,
                              message.generated_tokens, message.context_tokens, message.ends_with_eos)
        shared_tokens = 0 if agent.in_flight.continues else message.cached_tokens  # a prefix hit
        record_turn(agent.conversation, agent.in_flight, outcome, self._eos_text)
        agent.in_flight, agent.status, agent.prefill = None, "idle", None
        agent.context_tokens = message.context_tokens
        self._user_messages.pop(agent.agent_id, None)
        if self.sessions is not None:
            status = "cancelled" if message.finish_reason == "cancelled" else "complete"
            self.sessions.turn_ended(agent.agent_id, message.text, status, finish_reason=message.finish_reason,
                                     token_ids=message.token_ids)
        shared = f"{shared_tokens:,} tok from shared blocks" if shared_tokens else ""
        note = " · ".join(filter(None, [f"{message.generated_tokens} tok", shared,
                                        FINISH_NOTES.get(message.finish_reason)]))
        await self.pane(agent.agent_id).finish_reply(message.text, note)
        await self._send_next(agent)

    async def on_request_failed(self, message: RequestFailed) -> None:
        agent = self.roster.get(message.agent_id)
        if agent is None or agent.in_flight is None:
            return
        self.notify(message.error, title=f"{agent.name}: reply failed", severity="error", timeout=10)
        await self._fail_turn(agent, message.error, message.context_tokens)
        await self._send_next(agent)

    async def _fail_turn(self, agent: Agent, error: str, context_tokens: int) -> None:
        """End the agent's turn in flight with ``error``, shown in its chat; its text goes back to the input."""
        assert agent.in_flight is not None
        record_failure(agent.conversation, agent.in_flight, context_tokens)
        if self.sessions is not None:
            self.sessions.turn_ended(agent.agent_id, "", "error", finish_reason=error)
        pane = self.pane(agent.agent_id)
        if not pane.input.value:
            pane.restore_input(agent.in_flight.user_text)
        agent.in_flight, agent.status, agent.error, agent.prefill = None, "error", error, None
        agent.context_tokens = context_tokens
        self._user_messages.pop(agent.agent_id, None)
        await pane.add_error(error)

    def on_context_adopted(self, message: ContextAdopted) -> None:
        """A resumed agent's context is the text already in the engine for its next turn."""
        agent = self.roster.get(message.agent_id)
        if agent is None or agent.busy:
            return
        agent.context_tokens = message.num_tokens
        agent.conversation.context_text = message.text or None
        agent.conversation.context_tokens = message.num_tokens if message.text else 0

    def on_engine_stats(self, message: EngineStats) -> None:
        self.stats = message
        usage = message.pool.agent_usage()
        for agent in self.roster:
            agent.num_blocks = usage.get(agent.agent_id, 0)
            agent.spilled = agent.agent_id in message.spilled
            agent.context_tokens = message.context_tokens.get(agent.agent_id, agent.context_tokens)
