"""Forking the agent on screen: a new tab with the conversation so far, sharing its blocks.

``Forks`` belongs to ``BlockpoolApp`` (``app.forks``). The app copies the transcript (and the
session database row, so the fork survives a restart); the owner thread gives the fork every
block of the source's context (``engine.fork``: references +1, no K/V copied) and answers
with ``Forked`` or ``ForkFailed``. A failed fork keeps its tab: its next turn reads the
conversation again as a fresh prompt, so nothing is lost but time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.owner_messages import ForkAgent, Forked, ForkFailed
from frontend.sessions import Message as SavedMessage
from tui.agents import Agent

if TYPE_CHECKING:
    from tui.agent_tabs import AgentTabs
    from tui.chats import Chats
    from tui.host import Host


class Forks:
    """See the module docstring."""

    def __init__(self, host: Host, chats: Chats, agent_tabs: AgentTabs) -> None:
        self.host = host
        self.chats = chats
        self.agent_tabs = agent_tabs

    async def fork_active(self) -> None:
        """Fork the agent on screen into a new tab; each then continues on its own."""
        app = self.host
        source = app.active_agent
        if source is None or app.screen is not app.main_screen:
            return
        refusal = self._refusal(source)
        if refusal is not None:
            app.notify(refusal, title=f"{source.name}: not forked", severity="warning", timeout=8)
            return
        agent = await self.fork(source)
        self.agent_tabs.activate(agent.agent_id)

    def _refusal(self, source: Agent) -> str | None:
        if source.busy or source.pending:
            return "It is replying: wait for the reply or cancel it (Esc), then fork."
        if not self.chats.ready or self.host.owner is None:
            return "The engine is not ready yet: fork once the model has loaded."
        if not source.conversation.turns:
            return "Nothing to fork yet: send it a message first (ctrl+n opens an empty agent)."
        return None

    async def fork(self, source: Agent) -> Agent:
        """A new agent holding ``source``'s transcript; the engine shares its context's blocks."""
        app = self.host
        assert app.owner is not None
        conversation = source.conversation
        agent = await self.agent_tabs.open(f"{source.name} fork", activate=False, system=conversation.system)
        agent.conversation.turns = list(conversation.turns)
        agent.conversation.checkpoints = dict(conversation.checkpoints)
        agent.options = source.options
        if conversation.context_text is not None and conversation.context_tokens:
            agent.conversation.context_text = conversation.context_text
            agent.conversation.context_tokens = agent.context_tokens = conversation.context_tokens
            # Before any turn of the fork: the inbox keeps the order, so its first turn continues.
            app.owner.send(ForkAgent(source.agent_id, agent.agent_id))
        if app.sessions is not None:
            app.sessions.agent_forked(source.agent_id, agent.agent_id)
        await app.pane(agent.agent_id).show_saved(self._transcript(source))
        return agent

    def _transcript(self, source: Agent) -> list[SavedMessage]:
        """The source's messages as saved (failed turns marked), else as the app holds them."""
        sessions = self.host.sessions
        record = sessions.record(source.agent_id) if sessions is not None else None
        if record is not None and sessions is not None:
            return sessions.messages(record)
        return [SavedMessage(index, "user" if turn.role == "user" else "assistant", turn.content, "complete", None)
                for index, turn in enumerate(source.conversation.turns)]

    # -- the engine's answers ------------------------------------------------------------------

    def forked(self, event: Forked) -> None:
        roster = self.host.roster
        source, agent = roster.get(event.source_agent_id), roster.get(event.agent_id)
        if agent is None:
            return
        origin = source.name if source is not None else event.source_agent_id
        self.host.notify(f"{agent.name} shares {origin}'s {event.num_tokens:,} tokens "
                        f"({event.num_blocks:,} blocks, no K/V copied).", title="Forked")
        self.host.refresh_panels()

    def fork_failed(self, event: ForkFailed) -> None:
        agent = self.host.roster.get(event.agent_id)
        if agent is None:
            return
        # Its next turn starts fresh from the whole conversation (one already sent fails with "send again").
        agent.conversation.context_text, agent.conversation.context_tokens = None, 0
        agent.context_tokens = 0
        self.host.notify(f"{event.error}. {agent.name} reads the conversation again on its first turn.",
                        title="Blocks not shared", severity="warning", timeout=10)
