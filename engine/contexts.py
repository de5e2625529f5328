"""Every agent's context: where it lives (pool or disk), how a turn opens and writes it
back, and what closing, evicting, adopting and forking do to it. Owner thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import mlx.core as mx
from mlx_lm.models.cache import RotatingKVCache

from pool import AgentBlocks, BlockPool, PoolExhausted, PrefixMatch
from telemetry import Recorder
from telemetry.events import CopyOnWrite, Fork, Gather, Scatter

from .kv.batch_cache import STEP, PagedKVCache, with_room
from .kv.block_writer import BlockWriter
from .kv.hot_set import HotSet
from .kv.kv_store import CopyStats, KVBlockStore, LayerCache
from .kv.residency import Residency
from .prefix_cache import PrefixCache
from .prompt_sharing import PromptSharing
from .prompts import check_cache
from .scheduler import spill_order
from .sequence import Request

# A hot cache with less room than this grows after its turn, so that a typical next prompt fits
# without a copy of the whole history before its first token.
HOT_ROOM_TOKENS = STEP // 2


class Contexts:
    def __init__(self, pool: BlockPool, store: KVBlockStore, residency: Residency, prefix: PrefixCache,
                 recorder: Recorder, running: Callable[[], set[str]], hot: HotSet) -> None:
        self.pool = pool
        self.store = store
        self.hot = hot
        self.sharing = PromptSharing(pool, store, residency.writer, prefix, recorder)
        self.writer: BlockWriter = residency.writer
        self.residency = residency
        self.prefix = prefix
        self.recorder = recorder
        self._running = running  # agents with a request in the batch: never spilled
        self.agents: dict[str, AgentBlocks] = {}

    def victims_for(self, agent_id: str) -> Callable[[], list[AgentBlocks]]:
        """The idle agents that may be spilled to make room for ``agent_id``, in order."""
        return lambda: spill_order(self.agents.values(), self.residency.last_used,
                                   running=self._running(), exclude=agent_id)

    # -- a turn's context --------------------------------------------------------

    def open(self, request: Request) -> tuple[AgentBlocks, PrefixMatch | None]:
        """The context the turn continues, or a fresh one (from shared blocks where the
        pool holds the prompt's first blocks). ValueError for a stale ``cache``."""
        if request.cache is not None:
            check_cache(self.pool, request.agent_id, request.cache)
            agent, match = request.cache, None
        else:
            self.drop(request.agent_id)
            match = self.prefix.lookup(request.prompt_ids, request.cache_salt)
            agent = self.prefix.acquire(request.agent_id, match, request.cache_salt)
            self.sharing.extend_with_partial(agent, request.prompt_ids, self.agents.values())
        self.agents[request.agent_id] = agent
        return agent, match

    def leader_for(self, request: Request, running: Iterable[Request]) -> Request | None:
        """A running fresh turn whose prefill will give ``request`` more of its prompt's blocks
        than the pool holds now (``request`` should wait for it), else None."""
        if not self.sharing.enabled or request.cache is not None:
            return None
        match = self.prefix.lookup(request.prompt_ids, request.cache_salt)
        return self.sharing.leader_for(request, running, 0 if match is None else match.num_blocks)

    def write_prompt_blocks(self, request: Request, computed: int,
                            rows_of: Callable[[int, int], list | None]) -> None:
        """A fresh turn's prompt blocks computed so far go into its blocks now (``PromptSharing``)."""
        agent = self.agents.get(request.agent_id)
        if agent is not None:
            self.sharing.write_prompt_blocks(request, agent, computed, rows_of)

    def release_turn(self, request: Request, agent: AgentBlocks) -> None:
        """A turn that is not kept: its reservation goes back, and a fresh context lets go of
        the prompt blocks its prefill wrote (they stay cached) beyond what it started from."""
        self.writer.release(request.reserved)
        if request.cache is None:
            self.sharing.roll_back(agent, request.cached_tokens)

    def bring_in(self, request: Request, agent: AgentBlocks) -> bool:
        """A spilled context back in blocks (or marked for re-prefill: ``request.prefix_ids``);
        False when the pool has no room for it yet."""
        if request.agent_id not in self.residency.spilled:
            return True
        restored = self.residency.restore(agent, self.victims_for(request.agent_id))
        if restored is None:
            return False
        request.prefix_ids = restored.prefix
        if not restored.prefix:
            self.prefix.register(agent)
        return True

    def reserve(self, request: Request, agent: AgentBlocks, num_tokens: int) -> bool:
        """Blocks for a context of ``num_tokens`` in ``request.reserved``, spilling idle agents
        (least recently used first) when the pool is short; False when even that is not enough."""
        return self.residency.reserve(agent, request.reserved, num_tokens, self.victims_for(request.agent_id))

    def no_room(self, request: Request, agent: AgentBlocks, num_tokens: int) -> str:
        needed = self.writer.num_blocks_needed(agent, request.reserved, num_tokens)
        return (
            f"not enough free blocks for this turn: needs {needed}, {self.pool.free_blocks()} free of "
            f"{self.pool.total_blocks}, and no idle agent could be spilled to make room"
        )

    def touch(self, agent_id: str) -> None:
        self.residency.touch(agent_id)

    def back_out(self, request: Request) -> None:
        """A fresh context that could not start yet lets go of its shared blocks (they stay
        cached); the next try looks the prefix up again."""
        if request.cache is None:
            self.pool.free_agent_blocks(request.agent_id)
            self.agents[request.agent_id] = AgentBlocks(request.agent_id, 0, cache_salt=request.cache_salt)

    def gather(self, agent: AgentBlocks) -> list[LayerCache]:
        """mlx-lm caches (one per layer) holding the agent's context, gathered from its blocks."""
        caches, stats = self.store.gather(agent)
        self._published_gather(agent, stats, hot=False)
        return caches

    def materialize(self, agent: AgentBlocks, expected_tokens: int) -> list[LayerCache]:
        """The caches a turn starts from, each global layer's with room for ``expected_tokens``:
        the agent's hot caches when they hold its context (only sliding windows gathered),
        else gathered from its blocks; empty ones for an empty context. They are the batch's
        now: nothing else may keep them (the batch updates them in place)."""
        spec = self.store.spec
        if not agent.total_tokens:
            self.hot.drop(agent.agent_id)
            return [RotatingKVCache(max_size=spec.sliding_window, keep=0) if spec.is_sliding(layer_id)
                    else PagedKVCache(expected_tokens) for layer_id in range(spec.n_layers)]
        hot = self.hot.take(agent)
        wanted = spec.sliding_layer_ids if hot is not None else range(spec.n_layers)
        caches, stats = self.store.gather_layers(agent, wanted, expected_tokens=expected_tokens)
        self._published_gather(agent, stats, hot=hot is not None)
        if hot is not None:
            for cache in hot.values():
                cache.expected_tokens = expected_tokens
            caches.update(hot)
        return [caches[layer_id] for layer_id in range(spec.n_layers)]

    def _published_gather(self, agent: AgentBlocks, stats: CopyStats, *, hot: bool) -> None:
        if self.recorder.enabled:
            self.recorder.publish(Gather(agent_id=agent.agent_id, num_blocks=stats.num_blocks, hot=hot,
                                         num_bytes=stats.num_bytes, ms=stats.ms, num_tokens=stats.num_tokens))

    def write_back(self, request: Request, agent: AgentBlocks, caches: list, token_ids: list[int]) -> str | None:
        """Store the turn in the agent's blocks and name its full blocks by hash.

        The turn keeps what it reported (a reply cut at a stop string keeps fewer tokens).
        Returns an error when the pool cannot take the turn (another agent's equal block made
        one of ours shared since the last reservation and nothing is left to spill).
        """
        keep = min(caches[0].offset, request.context_tokens)
        if not self.residency.reserve(agent, request.reserved, keep, self.victims_for(agent.agent_id)):
            self.writer.release(request.reserved)
            return f"block pool full at the end of the turn: {self.pool.free_blocks()} free blocks"
        stats = self.writer.write_back(agent, request.reserved, caches, token_ids, keep)
        if stats is None:
            return None
        self._keep_hot(agent, caches, request.cached_tokens)
        copied = self.writer.copied
        if self.recorder.enabled:
            self.recorder.publish(Scatter(agent_id=agent.agent_id, num_blocks=stats.num_blocks,
                                          num_bytes=stats.num_bytes, ms=stats.ms, num_tokens=stats.num_tokens))
            if copied.num_blocks:
                self.recorder.publish(CopyOnWrite(agent_id=agent.agent_id, num_blocks=copied.num_blocks,
                                                  num_bytes=copied.num_bytes))
        self.prefix.register(agent)
        return None

    def _keep_hot(self, agent: AgentBlocks, caches: list, n0: int) -> None:
        """Keep the turn's global-layer caches for the agent's next turn, holding exactly what a
        gather of its blocks now gives: cut to the context kept, and the turn's own tokens
        replaced by their stored (dequantized) form when blocks are quantized."""
        spec, n1 = self.store.spec, agent.total_tokens
        hot: dict[int, PagedKVCache] = {}
        for layer_id, cache in enumerate(caches):
            if spec.is_sliding(layer_id):
                continue
            if not isinstance(cache, PagedKVCache) or cache.offset < n1:
                return  # not one of ours (or short): the next turn gathers
            cache.offset = n1
            if cache.keys.shape[2] - n1 < HOT_ROOM_TOKENS:  # grow now, after the reply, not in the next prompt
                cache.keys, cache.values = with_room(cache.keys, cache.values, n1, n1 + STEP)
            if spec.quantized and n1 > n0:
                keys, values = self.store.read_float(agent.layer_blocks(layer_id), n0, n1)
                cache.keys[..., n0:n1, :] = keys
                cache.values[..., n0:n1, :] = values
            hot[layer_id] = cache
        # Evaluate replaced tokens and grown buffers now, not in the next turn's first pass.
        mx.eval([(c.keys, c.values) for c in hot.values()])
        caches.clear()  # the list must not keep the buffers: the next turn updates them in place
        self.hot.put(agent, hot)

    # -- whole contexts ------------------------------------------------------------

    def drop(self, agent_id: str) -> None:
        """The agent's context is gone for good: its references, its spill file."""
        self.agents.pop(agent_id, None)
        self.hot.drop(agent_id)
        self.pool.free_agent_blocks(agent_id)
        self.residency.forget(agent_id)

    def evict(self, agent_id: str) -> bool:
        agent = self.agents.get(agent_id)
        return agent is not None and self.residency.spill_agent(agent, reason="asked")

    def adopt(self, agent: AgentBlocks) -> None:
        """An adopted context replaces what the agent held. A resident one is spilled first:
        when it holds the same ids, the adopted context restores from that file."""
        self.hot.drop(agent.agent_id)
        current = self.agents.get(agent.agent_id)
        if current is not None and current.num_blocks() and not self.residency.spill_agent(current, reason="adopt"):
            self.pool.free_agent_blocks(agent.agent_id)
        self.residency.spilled.add(agent.agent_id)
        self.agents[agent.agent_id] = agent

    def fork(self, source_id: str, new_id: str) -> AgentBlocks:
        """``new_id`` holds every block of ``source_id``'s context: references +1, no K/V copied.

        A spilled source is restored first. ValueError for an unknown source or a taken id;
        PoolExhausted when a spilled source cannot come back into the pool."""
        source = self.agents.get(source_id)
        if source is None or not (source.num_blocks() or source_id in self.residency.spilled):
            raise ValueError(f"agent {source_id!r} has no context to fork; submit a turn for it first")
        if self.agents.get(new_id) is not None or self.pool.agent_block_count(new_id):
            raise ValueError(f"agent {new_id!r} already has a context; fork into a new agent id")
        if source_id in self.residency.spilled and not self._bring_back(source):
            forked = AgentBlocks(new_id, source.total_tokens, list(source.token_ids), cache_salt=source.cache_salt)
            self.residency.spilled.add(new_id)  # its file is missing: the next turn re-prefills
        else:
            forked = self.pool.fork(source, new_id)
        self.agents[new_id] = forked
        self.residency.touch(new_id)
        if self.recorder.enabled:
            self.recorder.publish(Fork(source_agent_id=source_id, agent_id=new_id, num_blocks=forked.num_blocks(),
                                       num_tokens=forked.total_tokens, num_bytes=0))
        return forked

    def _bring_back(self, agent: AgentBlocks) -> bool:
        """Restore a spilled context into blocks; False when its file was unusable (the agent
        keeps its token ids and re-prefills them on its next turn)."""
        restored = self.residency.restore(agent, self.victims_for(agent.agent_id))
        if restored is None:
            needed = self.pool.spec.blocks_for_context(agent.total_tokens)
            raise PoolExhausted(needed, self.pool.free_blocks(), self.pool.total_blocks)
        if restored.prefix:
            agent.total_tokens, agent.token_ids = len(restored.prefix), list(restored.prefix)
            self.residency.spilled.add(agent.agent_id)
            return False
        self.prefix.register(agent)
        return True
