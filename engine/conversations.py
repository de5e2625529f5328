"""Idle conversations kept in blocks, so a stateless request can continue one.

An OpenAI client sends the whole history every turn. When a request's prompt token
ids start with the *entire* context of an idle agent (its prompt and reply as the
engine stored them, the model's end-of-turn token included), that agent's blocks
already hold the K/V of that prefix: the request continues the agent and only the
new tokens are prefilled. Anything else starts a fresh agent, so a template that
re-renders earlier turns differently costs speed, never correctness. A request continues
only a conversation of its own ``cache_salt``: tenants never find each other's.

Bookkeeping only (agent ids and token ids); the engine thread owns the engine.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Claim:
    """Which agent runs a request: a continued one (``cached_tokens`` > 0) or a fresh one."""

    agent_id: str
    cached_tokens: int

    @property
    def continues(self) -> bool:
        return self.cached_tokens > 0


class ConversationTable:
    """Idle agents by recency, each with the token ids its blocks hold; at most ``max_idle``."""

    def __init__(self, max_idle: int, *, prefix: str = "conv") -> None:
        if max_idle < 0:
            raise ValueError(f"max_idle must be >= 0, got {max_idle}")
        self.max_idle = max_idle
        self._prefix = prefix
        self._ids = itertools.count(1)
        self._idle: OrderedDict[str, tuple[int, ...]] = OrderedDict()  # oldest first
        self._salts: dict[str, str | None] = {}  # the cache_salt each idle agent's context started with

    def claim(self, prompt_ids: Sequence[int], salt: str | None = None) -> Claim:
        """The idle agent whose whole context is the longest proper prefix of ``prompt_ids``, or a new agent.

        A claimed agent leaves the table (it is busy) until ``release``.
        """
        best: str | None = None
        best_len = 0
        for agent_id, context in self._idle.items():
            n = len(context)
            if best_len < n < len(prompt_ids) and self._salts.get(agent_id) == salt and tuple(prompt_ids[:n]) == context:
                best, best_len = agent_id, n
        if best is None:
            return Claim(f"{self._prefix}-{next(self._ids)}", 0)
        del self._idle[best]
        self._salts.pop(best, None)
        return Claim(best, best_len)

    def release(self, agent_id: str, context_ids: Sequence[int], salt: str | None = None) -> list[str]:
        """Make an agent idle with the context it now holds (started with ``salt``); returns the
        agents pushed out (close them)."""
        self.forget(agent_id)
        if context_ids:
            self._idle[agent_id] = tuple(context_ids)
            self._salts[agent_id] = salt
        evicted = []
        while len(self._idle) > self.max_idle:
            oldest, _ = self._idle.popitem(last=False)
            self._salts.pop(oldest, None)
            evicted.append(oldest)
        return evicted

    def forget(self, agent_id: str) -> None:
        self._idle.pop(agent_id, None)
        self._salts.pop(agent_id, None)

    def idle_agents(self) -> list[str]:
        """Idle agent ids, least recently used first."""
        return list(self._idle)

    def __len__(self) -> int:
        return len(self._idle)
