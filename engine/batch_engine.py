"""BlockPoolBatchEngine: many agents decoded in one batch, each keeping its KV cache in blocks.

The façade over the engine's parts: the scheduler (who waits, who runs), each request's
own state (``engine.sequence``), the runner over mlx-lm's ``BatchGenerator``, the agents'
contexts with the prefix cache, and the step loop that joins them. It keeps the seed's
API (``submit``, ``step``, ``_reconstruct_cache``) and this project's (``step_once``,
``cancel``, ``close_agent``, ``evict``, ``adopt``, ``fork``, ``close``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from mlx_lm.tokenizer_utils import TokenizerWrapper

from pool import AgentBlocks, BlockPool, ModelCacheSpec
from telemetry import NullRecorder, Recorder
from telemetry.events import RequestSubmitted

from .assembly import PartsConfig, assemble
from .errors import EngineClosed
from .kv.kv_store import KVBlockStore, LayerCache
from .kv.spill import SpillUsage, model_key
from .owner import Owner, copy_of
from .prompts import check_cache, check_fits, check_request, check_salt, check_setup, encode_prompt
from .reporting import publish_pool_change
from .outputs import Completion, StepOutput
from .runner import DEFAULT_PREFILL_STEP
from .sequence import Request
from .truncation import truncate_context

__all__ = ["DEFAULT_PREFILL_STEP", "BlockPoolBatchEngine"]

T = TypeVar("T")


class BlockPoolBatchEngine:
    """Batched generation for many agents over one block pool.

    Args:
        model: an mlx-lm model (None: a gather-only engine, for benchmarks on synthetic blocks).
        tokenizer: its tokenizer (a ``TokenizerWrapper`` or a Hugging Face tokenizer).
        pool: the block pool holding every agent's context.
        spec: the model's cache shape (``ModelCacheSpec.from_model(model)``).
        max_batch_size: requests decoded together; more wait in a queue.
        prefill_step_size: prompt tokens processed per step, so a long prompt
            does not stall other agents' decoding.
        recorder: where telemetry events go (none by default).
        spill_dir: where idle agents' contexts are spilled under pool pressure and saved
            by ``close()`` (default: a private folder in the temp directory, removed by
            ``close()``; nothing is saved there).
        spill_budget_bytes: the most the spill folder's files may hold (None: no limit);
            least recently written files go first.
        prefix_cache: share full blocks between contexts with the same leading tokens
            (False: every fresh context prefills its whole prompt).
        hot_cache_bytes: how much of idle agents' contexts to keep materialised as mlx-lm
            caches, so that their next turn starts without a gather (``engine.kv.hot_set``;
            0: gather every turn; None: the float size of the pool, at most a quarter of memory).

    One thread steps the engine and owns its state (see ``engine.owner``); ``submit``,
    ``cancel``, ``close_agent`` and ``adopt`` are safe from any thread. ``close()``
    (or leaving a ``with`` block) saves resident contexts and releases the engine.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        pool: BlockPool,
        spec: ModelCacheSpec,
        *,
        max_batch_size: int = 8,
        prefill_step_size: int = DEFAULT_PREFILL_STEP,
        recorder: Recorder | None = None,
        spill_dir: str | Path | None = None,
        spill_budget_bytes: int | None = None,
        prefix_cache: bool = True,
        hot_cache_bytes: int | None = None,
    ) -> None:
        key = model_key(model) if model is not None else ""
        check_setup(pool, spec, key, max_batch_size=max_batch_size, prefill_step_size=prefill_step_size)
        self.model = model
        if tokenizer is not None and not isinstance(tokenizer, TokenizerWrapper):
            tokenizer = TokenizerWrapper(tokenizer)
        self.tokenizer = tokenizer
        self.pool = pool
        self.spec = spec
        self.max_batch_size = max_batch_size
        self.prefill_step_size = prefill_step_size
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        if self.recorder.enabled:
            pool.set_observer(partial(publish_pool_change, self.recorder))
        self._parts = parts = assemble(self, model, tokenizer, pool, spec, key, self.recorder, PartsConfig(
            max_batch_size, prefill_step_size, spill_dir, spill_budget_bytes, prefix_cache, hot_cache_bytes))
        self._store, self._scheduler, self._contexts, self._loop = parts.store, parts.scheduler, parts.contexts, parts.loop
        self._owner = Owner()
        self._step_lock = threading.Lock()  # held by whoever is stepping
        self._outbox: list[Completion] = []  # finished between steps (cancel/close while idle)
        self._closed_engine = False

    # -- public API (thread-safe) --------------------------------------------

    def submit(
        self,
        agent_id: str,
        prompt: str | Sequence[int],
        cache: AgentBlocks | None = None,
        max_tokens: int = 256,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        cache_salt: str | None = None,
    ) -> int:
        """Queue one turn for ``agent_id`` and return its uid.

        ``cache=None`` starts a fresh context (the agent's old blocks are released; leading
        full blocks the pool already holds are shared, not prefilled); ``cache=<AgentBlocks>``
        continues it, and ``prompt`` holds only the new tokens. ``seed`` (with a temperature):
        the turn samples from its own key, so the same seed gives the same text whoever
        shares the batch (``engine.sampling``). ``cache_salt`` (vLLM's name): a fresh context
        shares prefix blocks only with contexts of the same salt (tenants apart).
        """
        if self._loop.runner is None:
            raise RuntimeError("this engine was built without a model (gather-only); it cannot generate")
        self._check_open("submit")
        check_request(agent_id, max_tokens, temperature, top_p, seed)
        check_salt(cache_salt, cache)
        prompt_ids = self.encode(prompt, continues=cache is not None)

        def make(uid: int) -> Request:
            cached = check_cache(self.pool, agent_id, cache) if cache is not None else 0
            check_fits(self.spec, self.pool, cached + len(prompt_ids))
            return Request(uid, agent_id, prompt_ids, max_tokens, temperature, top_p, tuple(stop or ()), cache,
                           seed, cache_salt)

        request = self._scheduler.add(agent_id, make)
        if self.recorder.enabled:
            self.recorder.publish(RequestSubmitted(
                uid=request.uid, agent_id=agent_id, prompt_tokens=len(prompt_ids),
                cached_tokens=0 if cache is None else cache.total_tokens, max_tokens=max_tokens))
        return request.uid

    def cancel(self, uid: int) -> None:
        """Stop a request; it completes with ``finish_reason="cancelled"``."""
        self._check_open("cancel")
        self._scheduler.cancel(uid)
        self._apply_if_idle()

    def close_agent(self, agent_id: str) -> None:
        """Cancel the agent's request, free its blocks, and refuse it from now on.

        Its full blocks stay cached in the pool, so a new agent with the same prompt reuses them."""
        self._check_open("close_agent")
        self._scheduler.close(agent_id)
        self._apply_if_idle()

    def adopt(self, agent_id: str, token_ids: Sequence[int]) -> AgentBlocks:
        """Take over a context from an earlier run (e.g. a saved session) without prefilling it now.

        Its next turn (``cache=`` the returned AgentBlocks) restores K/V from the agent's
        spill file when that file holds exactly ``token_ids`` for this model, else
        re-prefills ``token_ids``. Safe from any thread: the owner registers it.
        """
        self._check_open("adopt")
        agent = AgentBlocks(agent_id, len(token_ids), list(token_ids))
        self._scheduler.adopt(agent)
        self._apply_if_idle()
        return agent

    def agent_blocks(self, agent_id: str) -> AgentBlocks | None:
        """The agent's current context, or None if it has none.

        On another thread than the owner: a copy taken between steps, for inspection.
        """
        if self._owner.is_mine():
            return self._contexts.agents.get(agent_id)
        agent = self._between_steps(lambda: self._contexts.agents.get(agent_id))
        return None if agent is None else copy_of(agent)

    def spilled_agents(self) -> set[str]:
        """Agents whose contexts are on disk, not in the pool."""
        return self._between_steps(lambda: set(self._contexts.residency.spilled))

    def spill_usage(self) -> SpillUsage:
        """The spill folder, and the files and bytes it holds now."""
        return self._contexts.residency.spill.usage()

    @property
    def kv_store(self) -> KVBlockStore:
        """The K/V slab behind the pool's blocks (for experiments that fill blocks synthetically)."""
        return self._store

    # -- owner thread only -------------------------------------------------------

    def evict(self, agent_id: str) -> bool:
        """Spill an idle agent's context to disk now; False if it is busy or holds nothing
        (owner thread only: raises ``WrongThread`` elsewhere)."""
        return self._on_owner("evict", lambda: not self._scheduler.is_busy(agent_id)
                              and self._contexts.evict(agent_id))

    def fork(self, source_agent_id: str, new_agent_id: str) -> AgentBlocks:
        """A new agent that holds every block of the source's context (references +1, no K/V
        copied); each continues on its own (``submit(new_agent_id, ..., cache=<returned>)``).

        A spilled source is restored first. Owner thread only; ValueError when the source is
        busy, closed or has no context, or ``new_agent_id`` is taken.
        """
        def fork() -> AgentBlocks:
            self._scheduler.check_fork(source_agent_id, new_agent_id)
            return self._contexts.fork(source_agent_id, new_agent_id)
        return self._on_owner("fork", fork)

    def truncate(self, agent_id: str, n_tokens: int) -> AgentBlocks:
        """Keep the first ``n_tokens`` of an idle agent's context (regenerate a reply, edit a
        message): blocks past them go back to the pool, cached where hashed; the next turn
        (``cache=`` the returned AgentBlocks, the same object) prefills only its new tokens.

        Owner thread only; ValueError when the agent is running, closed, has no context or
        holds fewer than ``n_tokens``; PoolExhausted when a shared block cannot be copied.
        """
        def truncate() -> AgentBlocks:
            self._scheduler.check_idle(agent_id, "truncate")
            return truncate_context(self._contexts, agent_id, n_tokens)
        return self._on_owner("truncate", truncate)

    def close(self) -> dict[str, str]:
        """Release the engine: save every resident context to the spill folder (when one was
        given; within its budget), remove the temp spill folder, restore MLX's cache limit.

        Returns agent id -> error for the contexts that could not be saved. Owner thread
        only; a second call does nothing; every call that would step or change the engine
        (``submit``, ``step``, ``step_once``, ``cancel``, ``close_agent``, ``adopt``, ``evict``,
        ``fork``) raises ``EngineClosed`` from then on. ``with BlockPoolBatchEngine(...) as engine:`` calls it.
        """
        self._owner.check("close")
        if self._closed_engine:
            return {}
        with self._step_lock:
            self._closed_engine = True
            return self._parts.shut_down()

    def __enter__(self) -> BlockPoolBatchEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- stepping ------------------------------------------------------------------

    def reserved_blocks(self) -> int:
        """Blocks taken by unfinished turns for tokens not yet written back (a turn that ended at
        its first token is written back at the start of the next step)."""
        turns = self._scheduler.unfinished() + self._loop.ending_turns()
        return sum(len(blocks) for r in turns for blocks in r.reserved.values())

    def has_work(self) -> bool:
        return self._scheduler.has_work() or bool(self._outbox) or self._loop.has_ended_turns

    @property
    def num_active(self) -> int:
        return len(self._scheduler.running)

    @property
    def num_queued(self) -> int:
        return self._scheduler.num_queued

    def step(self) -> Iterator[Completion]:
        """Run batched steps until every submitted request has finished, yielding each.

        After ``close()`` this raises ``EngineClosed`` at the call, not at the first ``next``."""
        self._check_open("step")
        return self._steps()

    def _steps(self) -> Iterator[Completion]:
        while self.has_work():
            yield from self.step_once().completions

    def step_once(self) -> StepOutput:
        """One batched decode step plus at most one prefill chunk (``EngineClosed`` after ``close()``)."""
        self._check_open("step_once")
        self._owner.claim()
        with self._step_lock:
            outbox, self._outbox = self._outbox, []
            return self._loop.step(outbox)

    def _reconstruct_cache(self, agent_blocks: AgentBlocks) -> list[LayerCache]:
        """mlx-lm caches (one per layer) holding the agent's context, gathered from its blocks."""
        return self._contexts.gather(agent_blocks)

    def encode(self, prompt: str | Sequence[int], *, continues: bool = False) -> list[int]:
        """Token ids of a prompt: as ``mlx_lm.generate`` tokenizes it, or, for a turn that
        ``continues`` a context, with no special tokens added (see ``engine.prompts``)."""
        return encode_prompt(self.tokenizer, prompt, continues=continues)

    def _check_open(self, call: str) -> None:
        # close() saved the contexts, removed the temp spill folder and restored MLX's cache limit:
        # a later step would change contexts that nothing saves any more.
        if self._closed_engine:
            raise EngineClosed(call)

    def _on_owner(self, call: str, change: Callable[[], T]) -> T:
        """``change()`` (its checks first) between steps, after the commands that arrived (owner thread only:
        ``WrongThread`` elsewhere; ``EngineClosed`` after ``close()``: its spill folder may be gone)."""
        self._owner.check(call)
        self._check_open(call)
        with self._step_lock:
            self._outbox.extend(self._loop.apply_commands())
            return change()

    def _between_steps(self, read: Callable[[], T]) -> T:
        """``read()`` on the owner thread, or elsewhere under the step lock (every change to the
        engine's state happens under it)."""
        if self._owner.is_mine():
            return read()
        with self._step_lock:
            return read()

    def _apply_if_idle(self) -> None:
        """Apply commands now when called on the owner thread between steps; else the next step does."""
        if self._owner.is_mine() and self._step_lock.acquire(blocking=False):
            try:
                self._outbox.extend(self._loop.apply_commands())
            finally:
                self._step_lock.release()
