"""Forking the focused agent: a new tab with the conversation so far, sharing its blocks.

A mixin of ``BlockpoolApp``. The app copies the transcript (and the session database
row, so the fork survives a restart); the engine thread gives the fork every block of
the source's context (``engine.fork``: references +1, no K/V copied) and answers with
``Forked`` or ``ForkFailed``. A failed fork keeps its tab: its next turn reads the
conversation again as a fresh prompt, so nothing is lost but time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.sessions import Message as SavedMessage
from tui.agents import Agent, Roster
from tui.messages import ForkAgent, Forked, ForkFailed
from tui.session_log import SessionLog
from tui.worker import EngineWorker

if TYPE_CHECKING:
    from textual.app import App
    from textual.screen import Screen

    from tui.widgets import ChatPane

    _AppBase = App[None]
else:
    _AppBase = object


class AgentForks(_AppBase):
    """``action_fork_agent`` and the engine's answers to it."""

    roster: Roster
    worker: EngineWorker | None
    sessions: SessionLog | None
    ready: bool

    if TYPE_CHECKING:  # provided by BlockpoolApp
        main_screen: Screen

        @property
        def active_agent(self) -> Agent | None: ...
        def pane(self, agent_id: str) -> ChatPane: ...
        def activate(self, agent_id: str) -> None: ...
        def refresh_panels(self) -> None: ...
        async def open_agent(self, name: str | None = None, *, activate: bool = True,
                             system: str | None = None, record_id: int | None = None) -> Agent: ...

    async def action_fork_agent(self) -> None:
        """Fork the agent on screen into a new tab; each then continues on its own."""
        source = self.active_agent
        if source is None or self.screen is not self.main_screen:
            return
        refusal = self._fork_refusal(source)
        if refusal is not None:
            self.notify(refusal, title=f"{source.name}: not forked", severity="warning", timeout=8)
            return
        agent = await self.fork_agent(source)
        self.activate(agent.agent_id)

    def _fork_refusal(self, source: Agent) -> str | None:
        if source.busy or source.pending:
            return "It is replying: wait for the reply or cancel it (Esc), then fork."
        if not self.ready or self.worker is None:
            return "The engine is not ready yet: fork once the model has loaded."
        if not source.conversation.turns:
            return "Nothing to fork yet: send it a message first (ctrl+n opens an empty agent)."
        return None

    async def fork_agent(self, source: Agent) -> Agent:
        """A new agent holding ``source``'s transcript; the engine shares its context's blocks."""
        assert self.worker is not None
        conversation = source.conversation
        agent = await self.open_agent(f"{source.name} fork", activate=False, system=conversation.system)
        agent.conversation.turns = list(conversation.turns)
        if conversation.context_text is not None and conversation.context_tokens:
            agent.conversation.context_text = conversation.context_text
            agent.conversation.context_tokens = agent.context_tokens = conversation.context_tokens
            # Before any turn of the fork: the queue keeps the order, so its first turn continues.
            self.worker.send(ForkAgent(source.agent_id, agent.agent_id))
        if self.sessions is not None:
            self.sessions.agent_forked(source.agent_id, agent.agent_id)
        await self.pane(agent.agent_id).show_saved(self._transcript(source))
        return agent

    def _transcript(self, source: Agent) -> list[SavedMessage]:
        """The source's messages as saved (failed turns marked), else as the app holds them."""
        record = self.sessions.record(source.agent_id) if self.sessions is not None else None
        if record is not None and self.sessions is not None:
            return self.sessions.messages(record)
        return [SavedMessage(index, "user" if turn.role == "user" else "assistant", turn.content, "complete", None)
                for index, turn in enumerate(source.conversation.turns)]

    # -- the engine's answers ------------------------------------------------------

    def on_forked(self, message: Forked) -> None:
        source, agent = self.roster.get(message.source_agent_id), self.roster.get(message.agent_id)
        if agent is None:
            return
        origin = source.name if source is not None else message.source_agent_id
        self.notify(f"{agent.name} shares {origin}'s {message.num_tokens:,} tokens "
                    f"({message.num_blocks:,} blocks, no K/V copied).", title="Forked")
        self.refresh_panels()

    def on_fork_failed(self, message: ForkFailed) -> None:
        agent = self.roster.get(message.agent_id)
        if agent is None:
            return
        # Its next turn starts fresh from the whole conversation (one already sent fails with "send again").
        agent.conversation.context_text, agent.conversation.context_tokens = None, 0
        agent.context_tokens = 0
        self.notify(f"{message.error}. {agent.name} reads the conversation again on its first turn.",
                    title="Blocks not shared", severity="warning", timeout=10)
