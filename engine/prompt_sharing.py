"""A shared prompt is prefilled once: by the first of the agents that start with it, even
when they arrive together, and a new agent takes up to its last token from what others hold.

Three parts, all for fresh contexts (``cache=None``) of models with global layers only (a
sliding window keeps no fixed token order to share mid-turn):
- ``write_prompt_blocks``: the full blocks a running turn's prefill has computed are written
  into its agent's blocks and named by hash at once, not when its reply ends;
- ``leader_for``: a fresh turn whose prompt shares more full blocks with one that is still
  prefilling than the pool holds waits for it (vLLM and SGLang schedule the same way);
- ``extend_with_partial``: past the shared full blocks, the tokens of the next block that an
  idle agent's context has in common with the prompt are copied (one block per layer), so
  only the rest is prefilled (SGLang's radix cache reuses to the token, too).
"""

from __future__ import annotations

from collections.abc import Iterable

from pool import AgentBlocks, Block, BlockPool, PoolExhausted
from telemetry import Recorder
from telemetry.events import Scatter

from .kv.block_writer import BlockWriter
from .kv.kv_store import KVBlockStore
from .prefix_cache import PrefixCache
from .sequence import Request

MIN_PARTIAL_TOKENS = 8  # fewer common tokens are cheaper to prefill than a block per layer to copy


def common_tokens(a: list[int], b: list[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` have in common, at most ``limit``."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PromptSharing:
    def __init__(self, pool: BlockPool, store: KVBlockStore, writer: BlockWriter, prefix: PrefixCache,
                 recorder: Recorder) -> None:
        self.pool = pool
        self.store = store
        self.writer = writer
        self.prefix = prefix
        self.recorder = recorder
        self.block_tokens = pool.spec.block_tokens

    @property
    def enabled(self) -> bool:
        return self.prefix.enabled and not self.pool.spec.sliding_layer_ids

    # -- agents arriving together -------------------------------------------------

    def leader_for(self, request: Request, running: Iterable[Request], pool_blocks: int) -> Request | None:
        """A running fresh turn still prefilling more of ``request``'s leading full blocks than
        the pool holds now (``pool_blocks``): ``request`` should wait for its blocks."""
        if not self.enabled or request.cache is not None:
            return None
        bt = self.block_tokens
        for other in running:
            if other.cache is not None or other.phase != "prefilling" or other.cache_salt != request.cache_salt:
                continue
            shared = common_tokens(other.prompt_ids[:-1], request.prompt_ids[:-1], len(request.prompt_ids)) // bt
            if shared > pool_blocks:
                return other
        return None

    def write_prompt_blocks(self, request: Request, agent: AgentBlocks, computed: int,
                            rows_of: object) -> int:
        """Write the full blocks of a fresh turn's first ``computed`` context tokens that are not in
        blocks yet, and hash them; returns the tokens written. ``rows_of(start, stop)`` gives
        each layer's K/V of those tokens (views into the batch cache)."""
        if not self.enabled or request.cache is not None:
            return 0
        start, stop = agent.total_tokens, computed // self.block_tokens * self.block_tokens
        if stop <= start:
            return 0
        rows = rows_of(start, stop)  # type: ignore[operator]
        if rows is None:
            return 0
        layers = [self.store.encode(keys, values) for keys, values in rows]
        stats = self.writer.write_layers(agent, request.reserved, layers, stop, request.prompt_ids[:stop],
                                         more_to_come=True)
        del rows, layers  # the batch cache is updated in place next step: no views may outlive this
        self.prefix.register(agent)
        if self.recorder.enabled:
            self.recorder.publish(Scatter(agent_id=agent.agent_id, num_blocks=stats.num_blocks,
                                          num_bytes=stats.num_bytes, ms=stats.ms, num_tokens=stats.num_tokens))
        return stop - start

    def roll_back(self, agent: AgentBlocks, num_tokens: int) -> None:
        """Undo ``write_prompt_blocks`` of a fresh turn that is not kept: the context keeps only
        the full blocks of its first ``num_tokens`` tokens (what it started from, less a copied
        partial block); the blocks let go of stay cached by hash for the next prompt."""
        if agent.total_tokens <= num_tokens:
            return
        keep = num_tokens // self.block_tokens
        for layer_id in list(agent.blocks):
            extra = agent.layer_blocks(layer_id)[keep:]
            if extra:
                agent.remove_blocks(layer_id, extra)
                self.pool.free(extra, agent.agent_id)
        agent.total_tokens = keep * self.block_tokens
        agent.token_ids = agent.token_ids[: agent.total_tokens]

    # -- a new agent on blocks others hold ------------------------------------------

    def extend_with_partial(self, agent: AgentBlocks, prompt_ids: list[int], sources: Iterable[AgentBlocks]) -> int:
        """Copy into a private block per layer the tokens after ``agent``'s full blocks that some
        resident context has in common with ``prompt_ids`` (never the prompt's last token);
        returns how many (0: none worth a block copy, or no free block)."""
        if not self.enabled:
            return 0
        bt, n = self.block_tokens, agent.total_tokens
        if n % bt or n >= len(prompt_ids) - 1:
            return 0
        best, best_len = None, MIN_PARTIAL_TOKENS - 1
        for source in sources:
            if (source.agent_id == agent.agent_id or source.total_tokens <= n or not source.num_blocks()
                    or source.cache_salt != agent.cache_salt):
                continue
            if source.token_ids[:n] != prompt_ids[:n]:
                continue
            length = common_tokens(source.token_ids[n : source.total_tokens], prompt_ids[n:-1], bt)
            if length > best_len:
                best, best_len = source, length
        if best is None:
            return 0
        copied = self._copy_first_tokens(best, agent, n // bt, best_len)
        if copied:
            agent.total_tokens, agent.token_ids = n + best_len, list(prompt_ids[: n + best_len])
        return best_len if copied else 0

    def _copy_first_tokens(self, source: AgentBlocks, agent: AgentBlocks, index: int, count: int) -> bool:
        fresh: list[Block] = []
        try:
            for layer_id in range(self.pool.spec.n_layers):
                fresh.append(self.pool.allocate(1, layer_id, agent.agent_id)[0])
        except PoolExhausted:  # no room for the copies: prefill those tokens instead
            if fresh:
                self.pool.free(fresh, agent.agent_id)
            return False
        for block in fresh:
            assert block.layer_id is not None
            origin = source.layer_blocks(block.layer_id)[index]
            self.store.copy_block(origin.block_id, block.block_id)
            block.token_start, block.num_tokens = index * self.block_tokens, count
            block.layer_data.update(self.store.block_arrays(block.block_id))
            agent.add_block(block)
        return True
