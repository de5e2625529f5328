"""Rolling a conversation back: regenerate the last reply, edit a message and send it again (in
place, or in a fork that holds the conversation before it).

``Rewinds`` belongs to ``BlockpoolApp`` (``app.rewinds``). The conversation, its chat pane and
the session log drop the last turn at once; the engine keeps the context's first tokens
(``Truncate``: the blocks past them go back to the pool, nothing kept is read again) and
answers ``Truncated``; then the message is sent again. Where the context cannot be rolled back
(``TruncateFailed``: a remote engine, a sliding window), the next turn reads the conversation
afresh: slower, never wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.owner_messages import Truncate, Truncated, TruncateFailed
from tui.chat import rewind

if TYPE_CHECKING:
    from tui.agents import Agent
    from tui.chats import Chats
    from tui.forks import Forks
    from tui.host import Host


class Rewinds:
    """See the module docstring."""

    def __init__(self, host: Host, chats: Chats, forks: Forks) -> None:
        self.host = host
        self.chats = chats
        self.forks = forks

    async def regenerate_active(self) -> None:
        """Drop the last reply of the agent on screen and ask for it again."""
        agent = self.host.active_agent
        if agent is not None and self._allowed(agent, len(agent.conversation.turns) - 2, "regenerated"):
            await self.rewind(agent, len(agent.conversation.turns) - 2, agent.conversation.turns[-2].content)

    async def edit_active(self) -> None:
        """Drop the last turn of the agent on screen; its message goes back to the composer."""
        if (agent := self.host.active_agent) is not None:
            await self.turn_chosen(agent.agent_id, len(agent.conversation.turns) - 2, "edit")

    async def turn_chosen(self, agent_id: str, turn_index: int, action: str) -> None:
        """Edit the user message at ``turn_index`` ("edit": in place; "fork": in a new agent that
        holds the conversation before it): the turns from there on go, the message is in the composer."""
        agent = self.host.roster.get(agent_id)
        done = "edited" if action == "edit" else "forked"
        if agent is None or not self._allowed(agent, turn_index, done):
            return
        text = agent.conversation.turns[turn_index].content
        if action == "fork":
            agent = await self.forks.fork(agent)
        await self.rewind(agent, turn_index, "")
        if action == "fork":
            self.forks.agent_tabs.activate(agent.agent_id)
        pane = self.host.pane(agent.agent_id)
        pane.input.value = text
        pane.input.focus()

    def _allowed(self, agent: Agent, turn_index: int, done: str) -> bool:
        if self.host.screen is not self.host.main_screen:
            return False
        refusal = self._refusal(agent, turn_index)
        if refusal is not None:
            self.host.notify(refusal, title=f"{agent.name}: not {done}", severity="warning", timeout=8)
        return refusal is None

    def _refusal(self, agent: Agent, turn_index: int) -> str | None:
        turns = agent.conversation.turns
        if agent.busy or agent.pending:
            return "It is replying: wait for the reply or cancel it (Esc) first."
        if not self.chats.ready or self.host.owner is None:
            return "The engine is not ready yet."
        if not 0 <= turn_index < len(turns) or turns[turn_index].role != "user":
            return "No reply yet: send it a message first."
        return None

    async def rewind(self, agent: Agent, num_turns: int, resend: str) -> None:
        """Keep the agent's first ``num_turns`` turns, roll its context back, then send ``resend``
        (blank: the next message queued, if any)."""
        assert self.host.owner is not None
        keep_tokens = rewind(agent.conversation, num_turns)
        await self.host.pane(agent.agent_id).drop_from_turn(num_turns)
        if self.host.sessions is not None:
            self.host.sessions.turns_dropped(agent.agent_id, num_turns // 2)
        if keep_tokens is None:  # a fresh context next turn: submitting it releases the old blocks
            await self._resend(agent, resend)
            return
        agent.rewinding = resend
        self.host.owner.send(Truncate(agent.agent_id, keep_tokens))

    async def _resend(self, agent: Agent, text: str) -> None:
        agent.rewinding = None
        if text:
            await self.chats.send(agent, text)
        else:
            await self.chats.send_next(agent)
        self.host.refresh_panels()

    # -- the engine's answers ------------------------------------------------------------------

    async def answered(self, event: Truncated | TruncateFailed) -> None:
        if isinstance(event, Truncated):
            await self.truncated(event)
        else:
            await self.truncate_failed(event)

    async def truncated(self, event: Truncated) -> None:
        agent = self.host.roster.get(event.agent_id)
        if agent is None or agent.rewinding is None:
            return
        agent.context_tokens = event.num_tokens
        if self.host.sessions is not None:
            self.host.sessions.turns_dropped(agent.agent_id, len(agent.conversation.turns) // 2, event.token_ids)
        await self._resend(agent, agent.rewinding)

    async def truncate_failed(self, event: TruncateFailed) -> None:
        agent = self.host.roster.get(event.agent_id)
        if agent is None or agent.rewinding is None:
            return
        agent.conversation.context_text, agent.conversation.context_tokens = None, 0
        self.host.notify(f"{event.error}. {agent.name} reads the conversation again on its next turn.",
                         title="Context not rolled back", severity="information", timeout=6)
        await self._resend(agent, agent.rewinding)
