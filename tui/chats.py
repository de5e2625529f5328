"""The app's side of the conversation with the engine: turns sent, and what the owner thread answers.

``Chats`` belongs to ``BlockpoolApp`` (``app.chats``). It turns a typed message into a
``Submit`` (or queues it while the agent is busy), and each engine event about a turn into
the agent's state, its chat pane and the session log; every event is handled here once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from engine.owner_messages import (
    Cancel,
    ContextAdopted,
    EngineFailed,
    EngineReady,
    EngineStats,
    RequestAccepted,
    RequestEnded,
    RequestRefused,
    Submit,
    TokensGenerated,
)
from tui.agent_options import AgentOptions
from tui import badges
from tui.agents import Agent, TurnTokens
from tui.chat import TurnOutcome, plan_turn, record_failure, record_turn
from tui.reply_note import reply_note

if TYPE_CHECKING:
    from engine.protocol import Render
    from tui.host import Host
    from tui.widgets import ChatMessage



class Chats:
    """See the module docstring. ``ready``: an engine is up and takes turns."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.ready = False
        self.engine_started = False  # an engine was ready once: a later failure is recovered, not fatal
        self._render: Render | None = None
        self._eos_text = ""
        self._user_messages: dict[str, ChatMessage] = {}  # agent id -> its in-flight user message
        self._agent_ids: dict[int, str] = {}  # request id -> the agent whose turn it is, while in flight

    # -- sending -----------------------------------------------------------------------------

    async def send(self, agent: Agent, text: str) -> None:
        """Send now if the agent is free, else queue visibly; blank text is ignored."""
        if not text.strip():
            return
        self.host.prompt_history.add(text)
        pane = self.host.pane(agent.agent_id)  # the composer cleared itself when Enter was pressed
        if agent.busy or agent.pending or not self.ready:
            agent.pending.append(text)
            await pane.add_queued(text)
            return
        await self._submit(agent, text)

    def cancel(self, agent: Agent) -> None:
        if agent.busy and agent.request_id is not None and self.host.owner is not None:
            self.host.owner.send(Cancel(agent.request_id))

    def forget(self, agent: Agent) -> None:
        """A closed agent: nothing of its turns is shown any more."""
        self._user_messages.pop(agent.agent_id, None)

    async def _submit(self, agent: Agent, text: str) -> None:
        owner, settings = self.host.owner, self.host.settings
        assert owner is not None and self._render is not None
        plan = plan_turn(agent.conversation, text, self._render)
        agent.in_flight, agent.status, agent.error, agent.prefill = plan, "queued", None, None
        agent.request_id = owner.new_request_id()
        self._agent_ids[agent.request_id] = agent.agent_id
        pane = self.host.pane(agent.agent_id)
        self._user_messages[agent.agent_id] = await pane.add_user(text, len(agent.conversation.turns))
        await pane.begin_reply()
        if self.host.sessions is not None:
            self.host.sessions.turn_began(agent.agent_id, text)
        o = agent.options or AgentOptions.defaults(settings)
        owner.send(Submit(agent.request_id, plan.prompt, o.max_tokens, agent_id=agent.agent_id,
                          continues=plan.continues, temperature=o.temperature, top_p=o.top_p, stop=o.stop))

    async def send_next(self, agent: Agent) -> None:
        """Send the agent's oldest queued message, if it is free to take one."""
        await self._send_next(agent)

    async def _send_next(self, agent: Agent) -> None:
        if agent.pending and not agent.busy and self.ready and self.host.roster.get(agent.agent_id) is agent:
            text = agent.pending.popleft()
            await self.host.pane(agent.agent_id).pop_queued()
            await self._submit(agent, text)

    def _agent(self, request_id: int) -> Agent | None:
        """The open agent whose turn ``request_id`` is, if it still is."""
        agent = self.host.roster.get(self._agent_ids.get(request_id))
        return agent if agent is not None and agent.request_id == request_id else None

    def _turn_over(self, agent: Agent) -> None:
        if agent.request_id is not None:
            self._agent_ids.pop(agent.request_id, None)
        agent.in_flight, agent.request_id, agent.prefill = None, None, None
        self._user_messages.pop(agent.agent_id, None)

    # -- the engine's answers ------------------------------------------------------------------

    async def engine_ready(self, event: EngineReady) -> None:
        self.ready = self.engine_started = True
        self._render, self._eos_text = event.render, event.eos_text
        for agent in self.host.roster:
            await self._send_next(agent)

    async def engine_failed(self, event: EngineFailed) -> None:
        """End the turns the engine lost, give queued messages back; it restarts, or the app says what to do."""
        self.ready = False
        roster = self.host.roster
        lost = ({a.agent_id for r in event.request_ids if (a := self._agent(r)) is not None} if event.restarting
                else {a.agent_id for a in roster if a.busy})
        for agent in roster:
            if agent.agent_id in lost and agent.in_flight is not None:
                await self._fail_turn(agent, event.error, agent.in_flight.base_tokens)
            await self._unqueue(agent)
        then = ("restarting it; every conversation is kept, send again when it is ready" if event.restarting
                else "it cannot go on: quit (ctrl+q) and start again; conversations are saved")
        self.host.notify(f"{event.error}. {then}", title="Engine failed", severity="error", timeout=30)

    async def _unqueue(self, agent: Agent) -> None:
        """Queued messages go back into the agent's input, oldest first."""
        pane = self.host.pane(agent.agent_id)
        if agent.pending:
            pane.input.value = " ".join(filter(None, [pane.input.value, *agent.pending]))
        while agent.pending:
            agent.pending.popleft()
            await pane.pop_queued()

    def accepted(self, event: RequestAccepted) -> None:
        if (agent := self._agent(event.request_id)) is None or agent.in_flight is None:
            return
        agent.turn = TurnTokens(cached=agent.in_flight.base_tokens)
        if agent.status == "queued":
            self.host.pane(agent.agent_id).reply_status("queued in the engine")

    async def refused(self, event: RequestRefused) -> None:
        agent = self._agent(event.request_id)
        if agent is None or agent.in_flight is None:
            return
        self.host.notify(event.error, title=f"{agent.name}: not sent", severity="error", timeout=10)
        if self.host.sessions is not None:
            self.host.sessions.turn_ended(agent.agent_id, "", "error", finish_reason=event.error)
        pane = self.host.pane(agent.agent_id)
        pane.restore_input(agent.in_flight.user_text)
        record_failure(agent.conversation, agent.in_flight, agent.context_tokens)
        user_message = self._user_messages.get(agent.agent_id)
        self._turn_over(agent)
        agent.status = "idle"
        await pane.drop_turn(user_message)

    async def tokens(self, event: TokensGenerated) -> None:
        for request_id, (done, total) in event.prefill.items():
            if (agent := self._agent(request_id)) is not None and agent.busy:
                agent.status, agent.prefill = "prefilling", (done, total)
                self.host.pane(agent.agent_id).reply_status(f"reading prompt {done}/{total}")
                if agent.turn is not None:
                    agent.turn = replace(agent.turn, prompt=total, prompt_done=done)
        for request_id, num_tokens in event.num_tokens.items():
            if (agent := self._agent(request_id)) is None or not agent.busy:
                continue
            if agent.turn is not None:
                agent.turn = replace(agent.turn, prompt_done=agent.turn.prompt,
                                     generated=agent.turn.generated + num_tokens)
            if (text := event.text.get(request_id)) is not None:
                badges.mark(self.host, agent, "unread")
                if agent.status != "generating":
                    agent.status, agent.prefill = "generating", None
                    self.host.pane(agent.agent_id).reply_status("")
                # Only the chat on screen re-renders per step; the others catch up when shown.
                await self.host.pane(agent.agent_id).append_reply(text, on_screen=agent.agent_id == self.host.tabs.active)

    async def ended(self, event: RequestEnded) -> None:
        agent = self._agent(event.request_id)
        if agent is None or agent.in_flight is None:
            return
        if event.finish_reason == "error":
            self.host.notify(event.error or "unknown error", title=f"{agent.name}: reply failed", severity="error",
                            timeout=10)
            await self._fail_turn(agent, event.error or "unknown error", event.context_tokens)
        else:
            await self._finish_turn(agent, event)
        await self._send_next(agent)

    async def _finish_turn(self, agent: Agent, event: RequestEnded) -> None:
        assert agent.in_flight is not None
        outcome = TurnOutcome(event.text, event.finish_reason, event.cached_tokens, event.prompt_tokens,
                              event.generated_tokens, event.context_tokens, event.ends_with_eos)
        continues = agent.in_flight.continues
        record_turn(agent.conversation, agent.in_flight, outcome, self._eos_text)
        self._turn_over(agent)
        agent.status, agent.context_tokens = "idle", event.context_tokens
        agent.turn = TurnTokens(event.cached_tokens, event.prompt_tokens, event.prompt_tokens, event.generated_tokens)
        note = reply_note(generated_tokens=event.generated_tokens, finish_reason=event.finish_reason,
                          cached_tokens=event.cached_tokens, continues=continues, ttft_s=event.ttft_s,
                          decode_tok_s=event.decode_tok_s)
        if self.host.sessions is not None:
            status = "cancelled" if event.finish_reason == "cancelled" else "complete"
            self.host.sessions.turn_ended(agent.agent_id, event.text, status, finish_reason=event.finish_reason,
                                         token_ids=event.context_ids, note=note)
        await self.host.pane(agent.agent_id).finish_reply(event.text, note)
        badges.reply_ended(self.host, agent, "finished")

    async def _fail_turn(self, agent: Agent, error: str, context_tokens: int) -> None:
        """End the agent's turn in flight with ``error``, shown in its chat; its text goes back to the input."""
        assert agent.in_flight is not None
        record_failure(agent.conversation, agent.in_flight, context_tokens)
        if self.host.sessions is not None:
            self.host.sessions.turn_ended(agent.agent_id, "", "error", finish_reason=error)
        if (user_message := self._user_messages.get(agent.agent_id)) is not None:
            user_message.turn_index = None  # a failed turn is no place in the conversation
        pane = self.host.pane(agent.agent_id)
        if not pane.input.value.startswith(agent.in_flight.user_text):  # put back once, before any new draft
            pane.restore_input(agent.in_flight.user_text)
        self._turn_over(agent)
        agent.status, agent.error, agent.context_tokens = "error", error, context_tokens
        await pane.add_error(error)
        badges.reply_ended(self.host, agent, "error")

    def adopted(self, event: ContextAdopted) -> None:
        """A resumed agent's context is the text already in the engine for its next turn."""
        agent = self.host.roster.get(event.agent_id)
        if agent is None or agent.busy:
            return
        agent.context_tokens = event.num_tokens
        agent.conversation.context_text = event.text or None
        agent.conversation.context_tokens = event.num_tokens if event.text else 0
        if event.text:
            agent.conversation.checkpoints[len(agent.conversation.turns)] = (event.text, event.num_tokens)

    def take_stats(self, stats: EngineStats) -> None:
        usage = stats.pool.agent_usage()
        for agent in self.host.roster:
            agent.num_blocks = usage.get(agent.agent_id, 0)
            agent.spilled = agent.agent_id in stats.spilled
            agent.context_tokens = stats.context_tokens.get(agent.agent_id, agent.context_tokens)
