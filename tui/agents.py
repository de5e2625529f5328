"""The app's own record of each agent: name, colour, status, conversation, queue.

Lives on the UI thread only; the engine thread learns about agents from commands.
"""

from __future__ import annotations

import colorsys

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from tui.agent_options import AgentOptions
from tui.badges import Badge
from tui.chat import Conversation, TurnPlan

AgentStatus = Literal["idle", "queued", "prefilling", "generating", "error"]

# Distinct on dark and light themes; agents past the eighth reuse them.
BASE_PALETTE = ("#e5534b", "#57ab5a", "#539bf5", "#daaa3f", "#b083f0", "#39c5cf", "#f69d50", "#fc8dc7")


def _more_colours(count: int) -> tuple[str, ...]:
    """Hues between the base ones, alternately light and deep: agents 9-32 look apart too."""
    out = []
    for i in range(count):
        hue = ((i * 0.381966) + 0.04) % 1.0  # golden-ratio steps spread hues evenly
        light = (0.78, 0.42, 0.62)[i % 3]
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return tuple(out)


# 32 colours, one per agent up to the 32 agents a pool serves comfortably; then they repeat.
PALETTE = BASE_PALETTE + _more_colours(24)


@dataclass(frozen=True, slots=True)
class TurnTokens:
    """Live token counts of an agent's current (or last) turn; replaced, never changed, so rows compare."""

    cached: int = 0  # context tokens the turn continues from
    prompt: int = 0  # prompt tokens to read (known once the engine starts reading them)
    prompt_done: int = 0
    generated: int = 0

    @property
    def context(self) -> int:
        return self.cached + self.prompt_done + self.generated


@dataclass
class Agent:
    agent_id: str  # the engine's id: never reused, even after a close
    name: str
    colour: str
    conversation: Conversation
    status: AgentStatus = "idle"
    error: str | None = None
    context_tokens: int = 0
    num_blocks: int = 0
    spilled: bool = False  # the engine moved its context to disk to make room
    prefill: tuple[int, int] | None = None
    in_flight: TurnPlan | None = None
    request_id: int | None = None  # the owner thread's id of the turn in flight
    pending: deque[str] = field(default_factory=deque)
    turn: TurnTokens | None = None
    options: AgentOptions | None = None  # its own sampling settings (None: the app's)
    badge: Badge | None = None  # what happened while it was not on screen (tui.badges)
    rewinding: str | None = None  # waiting for the engine to roll back; then this text ("": none) is sent

    @property
    def busy(self) -> bool:
        return self.in_flight is not None or self.rewinding is not None

    @property
    def holds_conversation(self) -> bool:
        return bool(self.conversation.turns or self.pending or self.busy or self.num_blocks)


class Roster:
    """Agents in the order they were opened."""

    def __init__(self) -> None:
        self._agents: dict[str, Agent] = {}
        self._num_opened = 0

    def next_name(self) -> str:
        """The default name of the next agent opened."""
        return f"agent {self._num_opened + 1}"

    def open(self, system: str, name: str | None = None, *, record_id: int | None = None) -> Agent:
        """A new agent. ``record_id`` (its session database row) fixes its engine id for good,
        so its spill file is never handed to another conversation after a restart."""
        name = name or self.next_name()
        self._num_opened += 1
        serial = self._num_opened
        agent_id = f"agent-{serial}" if record_id is None else self.agent_id_of(record_id)
        if agent_id in self._agents:  # an unsaved agent's serial met a saved one's row id
            agent_id = f"agent-{serial}-unsaved"
        agent = Agent(agent_id, name, self._free_colour(serial), Conversation(system=system))
        self._agents[agent.agent_id] = agent
        return agent

    def _free_colour(self, serial: int) -> str:
        """The serial's colour, or the next one no open agent has (closing and opening agents
        must not give two open ones the same look)."""
        start = (serial - 1) % len(PALETTE)
        taken = {a.colour for a in self._agents.values()}
        return next((c for c in PALETTE[start:] + PALETTE[:start] if c not in taken), PALETTE[start])

    @staticmethod
    def agent_id_of(record_id: int) -> str:
        """The engine id of a saved agent: its database row's, so it names the same spill file every run."""
        return f"agent-{record_id}"

    def close(self, agent_id: str) -> Agent | None:
        return self._agents.pop(agent_id, None)

    def get(self, agent_id: str | None) -> Agent | None:
        return self._agents.get(agent_id) if agent_id is not None else None

    def colours(self) -> dict[str, str]:
        return {a.agent_id: a.colour for a in self._agents.values()}

    def __iter__(self) -> Iterator[Agent]:
        return iter(list(self._agents.values()))

    def __len__(self) -> int:
        return len(self._agents)


@dataclass(frozen=True, slots=True)
class AgentRow:
    """What the agent list shows of one agent (an immutable copy for the widget)."""

    agent_id: str
    name: str
    colour: str
    status: AgentStatus
    error: str | None
    context_tokens: int
    num_blocks: int
    spilled: bool
    num_pending: int
    prefill: tuple[int, int] | None
    turn: TurnTokens | None = None
    badge: Badge | None = None

    @classmethod
    def of(cls, agent: Agent) -> AgentRow:
        context_tokens = agent.turn.context if agent.busy and agent.turn is not None else agent.context_tokens
        return cls(agent.agent_id, agent.name, agent.colour, agent.status, agent.error,
                   context_tokens, agent.num_blocks, agent.spilled, len(agent.pending), agent.prefill, agent.turn,
                   agent.badge)
