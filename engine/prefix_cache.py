"""The prefix cache: a fresh context starts from the pool's blocks of its prompt's leading
full blocks, and a turn's full blocks are named by their content hash once written.

The pool does the bookkeeping (chained hashes, reference counts, cached free blocks,
a hit cut to what every layer holds); this part decides when to look and what to report.
"""

from __future__ import annotations

from collections.abc import Sequence

from pool import AgentBlocks, BlockPool, PrefixMatch, RegisterStats
from telemetry import Recorder
from telemetry.events import PrefixLookup


class PrefixCache:
    """``enabled=False``: every context prefills its whole prompt and no block is shared."""

    def __init__(self, pool: BlockPool, recorder: Recorder, *, enabled: bool = True) -> None:
        self.pool = pool
        self.recorder = recorder
        self.enabled = enabled

    def lookup(self, prompt_ids: Sequence[int], salt: str | None = None) -> PrefixMatch | None:
        """The prompt's longest run of leading full blocks in the pool; None when there is none.

        The last token is left out: at least one token must be prefilled to get logits."""
        if not self.enabled or len(prompt_ids) < 2:
            return None
        match = self.pool.lookup_prefix(prompt_ids[:-1], salt)
        return match if match.num_blocks else None

    def acquire(self, agent_id: str, match: PrefixMatch | None, salt: str | None = None) -> AgentBlocks:
        """A fresh context for ``agent_id`` (its blocks hashed with ``salt``): holding ``match``'s
        blocks, or empty."""
        agent = AgentBlocks(agent_id, 0) if match is None else self.pool.acquire_prefix(agent_id, match)
        agent.cache_salt = salt
        return agent

    def report(self, agent_id: str, prompt_tokens: int, match: PrefixMatch | None, reused_tokens: int) -> None:
        """One lookup of a context that started (a blocked start does not count twice):
        ``reused_tokens`` of its prompt were not prefilled (``match``'s, and a partial block's)."""
        if not self.enabled or not self.recorder.enabled:
            return
        self.recorder.publish(PrefixLookup(
            agent_id=agent_id, prompt_tokens=prompt_tokens, reused_tokens=reused_tokens,
            num_blocks=0 if match is None else match.num_held_blocks,
            num_cached_blocks=0 if match is None else match.num_cached_blocks))

    def register(self, agent: AgentBlocks) -> RegisterStats:
        """Hash the context's full blocks now that their K/V is in the slab."""
        if not self.enabled:
            return RegisterStats(0, 0)
        return self.pool.register_full_blocks(agent)
