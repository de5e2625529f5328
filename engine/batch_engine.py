"""BlockPoolBatchEngine: many agents decoded in one batch, each keeping its KV cache in blocks.

mlx-lm's ``BatchGenerator`` does the batching (continuous batching, left-padded batch
caches, chunked prefill). This class adds what it lacks: per-agent contexts stored in
pool blocks across turns, block accounting, cancellation, and telemetry.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tokenizer_utils import TokenizerWrapper

from pool import AgentBlocks, BlockPool, ModelCacheSpec
from telemetry import NullRecorder, Recorder
from telemetry.events import EngineStep, Gather, RequestSubmitted, Scatter

from .block_writer import BlockWriter
from .kv_store import KVBlockStore, LayerCache
from .owner import Owner, copy_of
from .prompts import check_cache, check_fits, encode_prompt
from .reporting import publish_pool_change, report_completion
from .requests import Completion, FinishReason, PrefillProgress, Request, StepOutput, TokenDelta
from .residency import Residency
from .spill import SpillStore, SpillUsage, model_key
from .spill_folders import new_temp_folder, remove_folder, sweep_partial_files, sweep_stale_temp_folders
from .stop_trim import split_at_stop, tokens_of_reply

DEFAULT_PREFILL_STEP = 512
_BLOCKED = object()  # _start's answer when the pool has no room for a request yet
_CPU_CACHE_LIMIT_BYTES = 1 << 30


class BlockPoolBatchEngine:
    """Batched generation for many agents over one block pool.

    Args:
        model: an mlx-lm model.
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
    ) -> None:
        if spec != pool.spec:
            raise ValueError(f"spec {spec!r} does not match the pool's spec {pool.spec!r}")
        if max_batch_size < 1 or prefill_step_size < 1:
            raise ValueError(
                f"max_batch_size ({max_batch_size}) and prefill_step_size ({prefill_step_size}) must be >= 1"
            )
        self.model = model
        # model=None gives a gather-only engine (EXP-006 benchmarks on synthetic blocks).
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
        self._store = KVBlockStore(spec, pool.total_blocks)
        self._writer = BlockWriter(pool, self._store)
        self._previous_cache_limit: int | None = None
        if mx.default_device().type == mx.DeviceType.cpu:
            # A gather's buffers must come back from MLX's allocator cache: below the size
            # of a gather, fresh pages cost 2.8x (16K) to 5x (32K) the copy itself (EXP-006).
            limit = max(_CPU_CACHE_LIMIT_BYTES, self._store.nbytes)
            previous = mx.set_cache_limit(limit)
            if previous > limit:
                mx.set_cache_limit(previous)
            else:
                self._previous_cache_limit = previous
        sweep_stale_temp_folders()
        self._temp_spill = spill_dir is None
        spill_folder = new_temp_folder() if spill_dir is None else Path(spill_dir)
        sweep_partial_files(spill_folder)
        # Removed even when close() is never called: on collection or at exit.
        self._remove_temp = weakref.finalize(self, remove_folder, spill_folder) if self._temp_spill else None
        key = model_key(model) if model is not None else ""
        spill = SpillStore(spill_folder, spec, key, spill_budget_bytes)
        self._residency = Residency(pool, self._store, self._writer, spill, self.recorder)
        self._gen = self._new_generator() if model is not None else None
        self._owner = Owner()
        self._closed_engine = False

        self._lock = threading.Lock()  # guards the inbox and the sets below
        self._step_lock = threading.Lock()  # held by whoever is stepping
        self._uids = itertools.count()
        self._inbox: deque[Request] = deque()
        self._cancels: set[int] = set()
        self._closes: set[str] = set()
        self._adopts: list[AgentBlocks] = []  # adopted contexts, registered on the owner thread
        self._busy: dict[str, int] = {}  # agent -> uid of its unfinished request
        self._closed: set[str] = set()
        self._agents: dict[str, AgentBlocks] = {}
        self._waiting: deque[Request] = deque()  # admitted, not yet in the generator
        self._active: dict[int, Request] = {}  # by generator uid
        self._outbox: list[Completion] = []  # finished between steps (cancel/close while idle)

    def _new_generator(self) -> BatchGenerator:
        eos = sorted(self.tokenizer.eos_token_ids)
        return BatchGenerator(
            self.model,
            stop_tokens=[[t] for t in eos],
            completion_batch_size=self.max_batch_size,
            prefill_batch_size=self.max_batch_size,
            prefill_step_size=self.prefill_step_size,
        )

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
    ) -> int:
        """Queue one turn for ``agent_id`` and return its uid.

        ``cache=None`` starts a fresh context (the agent's old blocks are released);
        ``cache=<AgentBlocks>`` continues it, and ``prompt`` holds only the new tokens.
        """
        if self._gen is None:
            raise RuntimeError("this engine was built without a model (gather-only); it cannot generate")
        if self._closed_engine:
            raise RuntimeError("this engine was closed; build a new one")
        if not isinstance(agent_id, str) or not agent_id:
            raise ValueError(f"agent_id must be a non-empty string, got {agent_id!r}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        prompt_ids = self.encode(prompt, continues=cache is not None)
        with self._lock:
            if agent_id in self._closed:
                raise ValueError(f"agent {agent_id!r} was closed; start a new agent id")
            if agent_id in self._busy:
                raise ValueError(
                    f"agent {agent_id!r} already has request {self._busy[agent_id]} in flight; "
                    "wait for it or cancel it"
                )
            cached = check_cache(self.pool, agent_id, cache) if cache is not None else 0
            check_fits(self.spec, self.pool, cached + len(prompt_ids))
            uid = next(self._uids)
            request = Request(
                uid, agent_id, prompt_ids, max_tokens, temperature, top_p, tuple(stop or ()), cache
            )
            self._busy[agent_id] = uid
            self._inbox.append(request)
        if self.recorder.enabled:
            self.recorder.publish(RequestSubmitted(uid=uid, agent_id=agent_id, prompt_tokens=len(prompt_ids),
                                                   cached_tokens=cached, max_tokens=max_tokens))
        return uid

    def cancel(self, uid: int) -> None:
        """Stop a request; it completes with ``finish_reason="cancelled"``."""
        with self._lock:
            self._cancels.add(uid)
        self._apply_if_idle()

    def close_agent(self, agent_id: str) -> None:
        """Cancel the agent's request, free its blocks, and refuse it from now on."""
        with self._lock:
            self._closes.add(agent_id)
            self._closed.add(agent_id)
        self._apply_if_idle()

    def agent_blocks(self, agent_id: str) -> AgentBlocks | None:
        """The agent's current context, or None if it has none.

        On another thread than the owner: a copy taken between steps, for inspection.
        """
        if self._owner.is_mine():
            return self._agents.get(agent_id)
        with self._step_lock:  # every change to the engine's state happens under it
            agent = self._agents.get(agent_id)
            return None if agent is None else copy_of(agent)

    def spilled_agents(self) -> set[str]:
        """Agents whose contexts are on disk, not in the pool."""
        if self._owner.is_mine():
            return set(self._residency.spilled)
        with self._step_lock:
            return set(self._residency.spilled)

    def spill_usage(self) -> SpillUsage:
        """The spill folder, and the files and bytes it holds now."""
        return self._residency.spill.usage()

    def evict(self, agent_id: str) -> bool:
        """Spill an idle agent's context to disk now; False if it is busy or holds nothing
        (owner thread only: raises ``WrongThread`` elsewhere)."""
        self._owner.check("evict")
        with self._lock:
            if agent_id in self._busy:
                return False
        with self._step_lock:
            agent = self._agents.get(agent_id)
            return agent is not None and self._residency.spill_agent(agent, reason="asked")

    def adopt(self, agent_id: str, token_ids: Sequence[int]) -> AgentBlocks:
        """Take over a context from an earlier run (e.g. a saved session) without prefilling it now.

        Its next turn (``cache=`` the returned AgentBlocks) restores K/V from the agent's
        spill file when that file holds exactly ``token_ids`` for this model, else
        re-prefills ``token_ids``. Safe from any thread: the owner registers it.
        """
        agent = AgentBlocks(agent_id, len(token_ids), list(token_ids))
        with self._lock:
            if agent_id in self._busy or agent_id in self._closed:
                raise ValueError(f"agent {agent_id!r} is busy or closed; adopt it before using it")
            self._adopts.append(agent)
        self._apply_if_idle()
        return agent

    def close(self) -> dict[str, str]:
        """Release the engine: save every resident context to the spill folder (when one was
        given; within its budget), remove the temp spill folder, restore MLX's cache limit.

        Returns agent id -> error for the contexts that could not be saved. Owner thread
        only; a second call does nothing. ``with BlockPoolBatchEngine(...) as engine:`` calls it.
        """
        self._owner.check("close")
        if self._closed_engine:
            return {}
        with self._step_lock:
            self._closed_engine = True
            self._apply_pending()
            resident = [a for a in self._agents.values() if a.num_blocks()]
            errors = {} if self._temp_spill else self._residency.save_all(resident)
        if self._remove_temp is not None:
            self._remove_temp()
        if self._previous_cache_limit is not None:
            mx.set_cache_limit(self._previous_cache_limit)
            self._previous_cache_limit = None
        return errors

    def __enter__(self) -> BlockPoolBatchEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def reserved_blocks(self) -> int:
        """Blocks taken by unfinished turns for tokens not yet written back."""
        return sum(len(blocks) for r in self._unfinished() for blocks in r.reserved.values())

    def has_work(self) -> bool:
        with self._lock:
            return bool(
                self._inbox or self._waiting or self._active or self._cancels or self._closes or self._outbox
                or self._adopts
            )

    @property
    def num_active(self) -> int:
        return len(self._active)

    @property
    def num_queued(self) -> int:
        return len(self._inbox) + len(self._waiting)

    def step(self) -> Iterator[Completion]:
        """Run batched steps until every submitted request has finished, yielding each."""
        while self.has_work():
            yield from self.step_once().completions

    def step_once(self) -> StepOutput:
        """One batched decode step plus at most one prefill chunk."""
        self._owner.claim()
        with self._step_lock:
            tic = time.perf_counter()
            completions, self._outbox = self._outbox + self._apply_pending(), []
            self._admit(completions)
            deltas: list[TokenDelta] = []
            prefill: list[PrefillProgress] = []
            batch_size = len(self._active)
            prefill_tokens = 0
            if self._active:
                prefill_tokens = self._advance(deltas, prefill, completions)
            ms = (time.perf_counter() - tic) * 1000
            out = StepOutput(deltas, completions, prefill, batch_size, prefill_tokens, ms)
            if batch_size and self.recorder.enabled:
                self.recorder.publish(EngineStep(batch_size=batch_size, tokens_generated=len(deltas),
                                                 prefill_tokens=prefill_tokens, ms=ms, queued=self.num_queued))
            return out

    def _reconstruct_cache(self, agent_blocks: AgentBlocks) -> list[LayerCache]:
        """mlx-lm caches (one per layer) holding the agent's context, gathered from its blocks."""
        caches, stats = self._store.gather(agent_blocks)
        if self.recorder.enabled:
            self.recorder.publish(Gather(agent_id=agent_blocks.agent_id, num_blocks=stats.num_blocks,
                                     num_bytes=stats.num_bytes, ms=stats.ms, num_tokens=stats.num_tokens))
        return caches

    # -- validation ------------------------------------------------------------

    def encode(self, prompt: str | Sequence[int], *, continues: bool = False) -> list[int]:
        """Token ids of a prompt: as ``mlx_lm.generate`` tokenizes it, or, for a turn that
        ``continues`` a context, with no special tokens added (see ``engine.prompts``)."""
        return encode_prompt(self.tokenizer, prompt, continues=continues)

    # -- the stepping thread ---------------------------------------------------

    def _apply_if_idle(self) -> None:
        """Apply commands now when called on the owner thread between steps; else the next step does."""
        if self._owner.is_mine() and self._step_lock.acquire(blocking=False):
            try:
                self._outbox.extend(self._apply_pending())
            finally:
                self._step_lock.release()

    def _apply_pending(self) -> list[Completion]:
        """Cancels and closes that arrived since the last step."""
        with self._lock:
            cancels, self._cancels = self._cancels, set()
            closes, self._closes = self._closes, set()
            adopts, self._adopts = self._adopts, []
        for agent in adopts:
            self._register_adopted(agent)
        done: list[Completion] = []
        for request in self._unfinished():
            if request.agent_id in closes:
                done.append(self._cancel(request, keep=False))
            elif request.uid in cancels:
                done.append(self._cancel(request, keep=request.phase == "generating"))
        for agent_id in closes:
            self._agents.pop(agent_id, None)
            self.pool.free_agent_blocks(agent_id)
            self._residency.forget(agent_id)
        return done

    def _register_adopted(self, agent: AgentBlocks) -> None:
        """An adopted context replaces what the agent held. A resident one is spilled first:
        when it holds the same ids, the adopted context restores from that file."""
        current = self._agents.get(agent.agent_id)
        if current is not None and current.num_blocks() and not self._residency.spill_agent(current, reason="adopt"):
            self.pool.free_agent_blocks(agent.agent_id)
        self._residency.spilled.add(agent.agent_id)
        self._agents[agent.agent_id] = agent

    def _unfinished(self) -> list[Request]:
        with self._lock:
            inbox = list(self._inbox)
        return inbox + list(self._waiting) + list(self._active.values())

    def _admit(self, completions: list[Completion]) -> None:
        """Move submitted requests into the generator, gathering their contexts.

        A request the pool cannot hold yet (after spilling idle agents) keeps its place
        in the queue while later ones that fit go ahead; it starts when running
        requests finish and free blocks.
        """
        with self._lock:
            self._waiting.extend(self._inbox)
            self._inbox.clear()
        blocked: list[Request] = []
        while self._waiting and len(self._active) < self.max_batch_size:
            request = self._waiting.popleft()
            outcome = self._start(request)
            if outcome is _BLOCKED:
                blocked.append(request)
            elif outcome is not None:
                completions.append(self._finish(request, "error", error=outcome))
        if blocked and not self._active:  # nothing running will ever free blocks for it
            head = blocked.pop(0)
            completions.append(self._finish(head, "error", error=self._no_room_message(head)))
        self._waiting.extendleft(reversed(blocked))

    def _start(self, request: Request) -> str | object | None:
        """Start a request: None when started, an error message, or _BLOCKED."""
        agent = self._context_for(request)
        if isinstance(agent, str):
            return agent
        if request.agent_id in self._residency.spilled:
            restored = self._residency.restore(agent, self._evictable)
            if restored is None:
                return _BLOCKED
            request.prompt_ids = restored.prefix + request.prompt_ids
        request.cached_tokens = agent.total_tokens
        # +1: the first generated token enters the cache before it is reported.
        if not self._residency.reserve(agent, request.reserved, request.context_tokens + 1, self._evictable):
            return _BLOCKED
        self._residency.touch(request.agent_id)
        caches = self._reconstruct_cache(agent) if agent.total_tokens else None
        sampler = None if request.temperature == 0 else make_sampler(request.temperature, request.top_p)
        (gen_uid,) = self._gen.insert(
            [request.prompt_ids],
            max_tokens=[request.max_tokens],
            caches=[caches],
            all_tokens=[list(agent.token_ids)],
            samplers=[sampler],
        )
        request.gen_uid = gen_uid
        request.phase = "prefilling"
        request.detokenizer = self.tokenizer.detokenizer
        self._active[gen_uid] = request
        return None

    def _no_room_message(self, request: Request) -> str:
        agent = self._agents[request.agent_id]
        needed = self._writer.num_blocks_needed(agent, {}, request.context_tokens + 1)
        return (
            f"not enough free blocks for this turn: needs {needed}, {self.pool.free_blocks()} free of "
            f"{self.pool.total_blocks}, and no idle agent could be spilled to make room"
        )

    def _evictable(self) -> list[AgentBlocks]:
        """Agents whose blocks may be spilled: none with a request in the batch.

        A queued request's agent may go: its turn restores the context when it starts.
        """
        running = {r.agent_id for r in self._active.values()}
        return [a for a_id, a in self._agents.items() if a_id not in running and a.num_blocks()]

    def _context_for(self, request: Request) -> AgentBlocks | str:
        """The agent's context this turn continues (or a fresh one), or an error message."""
        if request.continues is None:
            self.pool.free_agent_blocks(request.agent_id)
            self._residency.forget(request.agent_id)
            agent = AgentBlocks(request.agent_id, 0)
        else:
            agent = request.continues
            try:
                check_cache(self.pool, request.agent_id, agent)
            except ValueError as exc:
                return str(exc)
        self._agents[request.agent_id] = agent
        return agent

    def _advance(self, deltas: list[TokenDelta], prefill: list[PrefillProgress], completions: list[Completion]) -> int:
        try:
            prompt_responses, gen_responses = self._gen.next()
        except Exception as exc:  # a model error must not take other agents' contexts with it
            message = f"model step failed: {type(exc).__name__}: {exc}"
            for request in list(self._active.values()):
                completions.append(self._finish(request, "error", error=message))
            self._gen = self._new_generator()
            return 0
        prefill_tokens = 0
        for response in prompt_responses:
            request = self._active[response.uid]
            processed, total = response.progress
            prefill_tokens += processed - request.prefilled_tokens
            request.prefilled_tokens = processed
            prefill.append(PrefillProgress(request.uid, request.agent_id, processed, total))
        for response in gen_responses:
            request = self._active[response.uid]
            done = self._on_token(request, response, deltas)
            if done is not None:
                completions.append(done)
        return prefill_tokens

    def _on_token(self, request: Request, response: Any, deltas: list[TokenDelta]) -> Completion | None:
        if request.first_token_s is None:
            request.first_token_s = time.perf_counter()
        request.phase = "generating"
        request.generated_ids.append(response.token)
        reason: FinishReason | None = response.finish_reason
        is_eos = response.token in self.tokenizer.eos_token_ids
        segment = ""
        if not is_eos:
            request.detokenizer.add_token(response.token)
        if reason is not None:
            request.detokenizer.finalize()
        if not is_eos or reason is not None:
            segment = request.detokenizer.last_segment
        segment, request.held_text, hit = split_at_stop(
            request.text, request.held_text, segment, request.stop, final=reason is not None)
        request.text += segment
        deltas.append(TokenDelta(request.uid, request.agent_id, response.token, segment))
        if hit:
            return self._stop_at_reply(request, response if reason is not None else None)
        if reason is not None:
            return self._finish(request, reason, caches=response.prompt_cache, token_ids=response.all_tokens)
        agent = self._agents[request.agent_id]
        if not self._residency.reserve(agent, request.reserved, request.context_tokens + 1, self._evictable):
            needed = self._writer.num_blocks_needed(agent, request.reserved, request.context_tokens + 1)
            error = (
                f"block pool full after {len(request.generated_ids)} tokens: needs {needed} more blocks, "
                f"{self.pool.free_blocks()} free of {self.pool.total_blocks}, nothing idle to spill"
            )
            return self._remove(request, "error", keep=False, error=error)
        return None

    def _stop_at_reply(self, request: Request, finished: Any | None) -> Completion:
        """A stop string ended the reply: the context keeps only the tokens of the text reported,
        or, when the stop began inside a token, not the turn at all (see ``engine.stop_trim``).
        ``finished``: the generator's response when it ended the sequence in the same step."""
        kept = tokens_of_reply(self.tokenizer, request.generated_ids, request.text)
        if kept is not None:
            del request.generated_ids[kept:]
        if finished is None:
            return self._remove(request, "stop", keep=kept is not None)
        caches = finished.prompt_cache if kept is not None else None
        return self._finish(request, "stop", caches=caches, token_ids=finished.all_tokens)

    def _cancel(self, request: Request, *, keep: bool) -> Completion:
        """Stop a request. A reply cut short keeps what it generated (``keep``);
        a half-read prompt is dropped, leaving the agent's context as it was."""
        if request.gen_uid is None:
            return self._finish(request, "cancelled")
        return self._remove(request, "cancelled", keep=keep)

    def _remove(self, request: Request, reason: FinishReason, *, keep: bool, error: str | None = None) -> Completion:
        extracted = self._gen.remove([request.gen_uid], return_prompt_caches=keep)
        caches, token_ids = extracted.get(request.gen_uid, (None, None))
        return self._finish(request, reason, caches=caches, token_ids=token_ids, error=error)

    def _finish(
        self,
        request: Request,
        reason: FinishReason,
        *,
        caches: list | None = None,
        token_ids: list[int] | None = None,
        error: str | None = None,
    ) -> Completion:
        """Write the turn back into blocks (when kept), release what it reserved, report it."""
        agent = self._agents.get(request.agent_id) or AgentBlocks(request.agent_id, 0)
        if request.gen_uid is not None:
            self._active.pop(request.gen_uid, None)
        if request in self._waiting:
            self._waiting.remove(request)
        with self._lock:
            if request in self._inbox:
                self._inbox.remove(request)
            self._busy.pop(request.agent_id, None)
        self._residency.touch(request.agent_id)
        if caches is not None and token_ids is not None and caches[0].offset > agent.total_tokens:
            # The turn keeps what it reported: a reply cut at a stop string keeps fewer tokens.
            keep = min(caches[0].offset, request.context_tokens)
            stats = self._writer.write_back(agent, request.reserved, caches, token_ids, keep)
            if stats is not None and self.recorder.enabled:
                self.recorder.publish(Scatter(agent_id=agent.agent_id, num_blocks=stats.num_blocks,
                                          num_bytes=stats.num_bytes, ms=stats.ms, num_tokens=stats.num_tokens))
        else:
            self._writer.release(request.reserved)
        return report_completion(self.recorder, self.pool, request, reason, agent, error)
