"""One engine step, as nano-vllm's ``LLMEngine.step``: apply commands, admit, run, postprocess.

Admission opens each request's context (continued, restored from disk, or fresh from
shared prefix blocks), reserves the blocks its tokens need, gathers its K/V and hands
it to the runner; postprocessing streams tokens and, when a turn ends, writes it back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from pool import AgentBlocks, BlockPool
from telemetry import Recorder
from telemetry.events import EngineStep

from .contexts import Contexts
from .outputs import Completion, FinishReason, PrefillProgress, StepOutput, TokenDelta
from .preemption import Preempter
from .reporting import report_completion
from .runner import ModelRunner
from .scheduler import Admission, Blocked, Done, Failed, Scheduler, Started
from .sequence import Request


class StepLoop:
    def __init__(self, pool: BlockPool, scheduler: Scheduler, contexts: Contexts, runner: ModelRunner | None,
                 tokenizer: Any, recorder: Recorder) -> None:
        self.pool = pool
        self.scheduler = scheduler
        self.contexts = contexts
        self.runner = runner
        self.tokenizer = tokenizer
        self.recorder = recorder
        self.preempter = None if runner is None else Preempter(pool, scheduler, contexts, runner, recorder)
        self._deltas: list[TokenDelta] = []  # where admission streams a first token (see admit)
        self._prefill: list[PrefillProgress] = []  # and reports a prompt read in one pass
        # Turns ended by their first token (admit): written back at the start of the next step.
        self._ending: list[tuple[Request, Callable[[], Completion]]] = []

    # -- commands ----------------------------------------------------------------

    def apply_commands(self) -> list[Completion]:
        """Cancels, closes and adoptions that arrived since the last step."""
        commands = self.scheduler.take_commands()
        for agent in commands.adopted:
            self.contexts.adopt(agent)
        done: list[Completion] = []
        for request in self.scheduler.unfinished():
            if request.agent_id in commands.close_agent_ids:
                done.append(self._cancel(request, keep=False))
            elif request.uid in commands.cancel_uids:
                done.append(self._cancel(request, keep=request.phase == "generating"))
        for agent_id in commands.close_agent_ids:
            self.contexts.drop(agent_id)
        return done

    def step(self, completions: list[Completion]) -> StepOutput:
        """One engine step after ``completions`` that finished between steps: last step's ended
        turns written back, commands, admission, and one batched model step."""
        tic = time.perf_counter()
        completions = completions + self.finish_ended() + self.apply_commands()
        deltas: list[TokenDelta] = []
        prefill: list[PrefillProgress] = []
        completions += self.admit(deltas, prefill)
        batch_size = len(self.scheduler.running)
        # A first token read in one pass at admission goes out now, not after a batched step.
        advance = batch_size and not deltas
        prefill_tokens = self.advance(deltas, prefill, completions) if advance else sum(p.total for p in prefill)
        ms = (time.perf_counter() - tic) * 1000
        if batch_size and self.recorder.enabled:
            self.recorder.publish(EngineStep(batch_size=batch_size, tokens_generated=len(deltas),
                                             prefill_tokens=prefill_tokens, ms=ms, queued=self.scheduler.num_queued))
        return StepOutput(deltas, completions, prefill, batch_size, prefill_tokens, ms)

    # -- admission -----------------------------------------------------------------

    def admit(self, deltas: list[TokenDelta], prefill: list[PrefillProgress]) -> list[Completion]:
        """Start waiting requests; a continued turn read in one pass reports its prompt as read
        (``prefill``) and its first token (``deltas``)."""
        self._deltas, self._prefill = deltas, prefill
        failed = self.scheduler.admit(self._start)
        return [self._finish(request, "error", error=error) for request, error in failed]

    def _start(self, request: Request) -> Admission:
        assert self.runner is not None and self.preempter is not None, "submit refuses requests without a model"
        if request.paused is not None:
            return self.preempter.resume(request)
        leader = self.contexts.leader_for(request, self.scheduler.running.values())
        if leader is not None:
            return Blocked(f"waiting for agent {leader.agent_id!r} to prefill the prompt blocks they share")
        try:
            agent, match = self.contexts.open(request)
        except ValueError as exc:
            return Failed(str(exc))
        if not self.contexts.bring_in(request, agent):
            return Blocked(self.contexts.no_room(request, agent, request.context_tokens + 1))
        request.cached_tokens = agent.total_tokens
        request.reused_tokens = 0 if request.cache is not None else agent.total_tokens
        need = request.context_tokens + 1  # the first generated token enters the cache before it is reported
        if not self.contexts.reserve(request, agent, need):
            reason = self.contexts.no_room(request, agent, need)
            self.contexts.back_out(request)
            return Blocked(reason)
        if request.cache is None:
            self.contexts.prefix.report(request.agent_id, len(request.prompt_ids), match, request.reused_tokens)
        self.contexts.touch(request.agent_id)
        caches = self.contexts.materialize(agent, need)
        if request.cache is not None and len(request.prefill_ids) <= self.runner.prefill_step_size:
            return self._start_in_one_pass(request, agent, caches)
        batch_uid = self.runner.insert(request.prefill_ids, max_tokens=request.max_tokens, cache=caches,
                                     context_ids=list(agent.token_ids), sampler=request.sampler)
        request.start(batch_uid, self.tokenizer.detokenizer)
        return Started()

    def _start_in_one_pass(self, request: Request, agent: AgentBlocks, caches: list) -> Admission:
        """A continued turn's short prompt is read and its first token sampled in one forward
        pass (``ModelRunner.first_token``); the reply goes on in the batch from that token."""
        assert self.runner is not None
        prompt, context = request.prefill_ids, list(agent.token_ids) + request.prefill_ids
        token = self.runner.first_token(prompt, caches, sampler=request.sampler)
        is_eos = token in self.tokenizer.eos_token_ids
        reason: FinishReason | None = "stop" if is_eos else "length" if request.max_tokens == 1 else None
        request.start(None, self.tokenizer.detokenizer)
        request.prefilled_tokens = len(prompt)
        self._prefill.append(PrefillProgress(request.uid, request.agent_id, len(prompt), len(prompt)))
        delta, hit = request.add_token(token, reason, is_eos=is_eos)
        self._deltas.append(delta)
        if hit or reason is not None:  # its token goes out now; its K/V and write-back next step
            finished: FinishReason = "stop" if hit or reason is None else reason
            end = partial(self._end_at_first_token, request, finished, hit, token, caches, context)
            self._ending.append((request, end))
            return Done()
        request.batch_uid = self.runner.insert([token], max_tokens=request.max_tokens - 1, cache=caches,
                                             context_ids=context, sampler=request.sampler)
        return Started()

    def _end_at_first_token(self, request: Request, reason: FinishReason, hit: bool, token: int, caches: list,
                            context: list[int]) -> Completion:
        assert self.runner is not None
        self.runner.feed(token, caches)  # the context keeps its last token, as mlx-lm's cache does
        kept = request.trim_to_reply(self.tokenizer) if hit else True
        return self._finish(request, reason, caches=caches if kept else None, token_ids=context + [token])

    def finish_ended(self) -> list[Completion]:
        """Turns whose first token ended them last step: that token was streamed at once, their
        K/V and write-back are done now (before this step's commands, which may close the agent)."""
        ending, self._ending = self._ending, []
        return [end() for _, end in ending]

    @property
    def has_ended_turns(self) -> bool:
        return bool(self._ending)

    def ending_turns(self) -> list[Request]:
        """Turns that ended at their first token and still hold their reservation."""
        return [request for request, _ in self._ending]

    # -- running ---------------------------------------------------------------------

    def advance(self, deltas: list[TokenDelta], prefill: list[PrefillProgress], completions: list[Completion]) -> int:
        """One batched model step; returns the prompt tokens it read."""
        assert self.runner is not None and self.preempter is not None
        try:
            prompt_responses, gen_responses = self.runner.step()
        except Exception as exc:  # a model error must not take other agents' contexts with it
            message = f"model step failed: {type(exc).__name__}: {exc}"
            for request in list(self.scheduler.running.values()):
                completions.append(self._finish(request, "error", error=message))
            self.runner.reset()
            return 0
        prefill_tokens = 0
        for response in prompt_responses:
            request = self.scheduler.running[response.uid]
            if request.phase == "generating":  # a paused or one-pass reply reading its last token
                continue
            processed, total = response.progress
            prefill_tokens += request.on_prefill(processed)
            prefill.append(PrefillProgress(request.uid, request.agent_id, processed, total))
            if request.cache is None and not request.preempted:  # for agents that start the same way
                computed = request.cached_tokens + min(processed, total - 1)
                self.contexts.write_prompt_blocks(request, computed, partial(self.runner.context_rows, response.uid))
        short: list[Request] = []  # replies whose next token has no block yet
        for response in gen_responses:
            request = self.scheduler.running[response.uid]
            done = self._on_token(request, response, deltas)
            if done is not None:
                completions.append(done)
            elif not self.preempter.reserve_next(request):
                short.append(request)
        for request in self.preempter.make_room(short):
            completions.append(self._remove(request, "error", keep=False, error=self.preempter.outgrown_error(request)))
        return prefill_tokens

    def _on_token(self, request: Request, response: Any, deltas: list[TokenDelta]) -> Completion | None:
        reason: FinishReason | None = response.finish_reason
        delta, hit = request.add_token(response.token, reason, is_eos=response.token in self.tokenizer.eos_token_ids)
        deltas.append(delta)
        if hit:
            return self._stop_at_reply(request, response if reason is not None else None)
        if reason is not None:
            return self._finish(request, reason, caches=response.prompt_cache, token_ids=response.all_tokens)
        return None

    def _stop_at_reply(self, request: Request, finished: Any | None) -> Completion:
        """A stop string ended the reply: the context keeps only the tokens of the text reported,
        or, when the stop began inside a token, not the turn at all (see ``engine.stop_trim``).
        ``finished``: the generator's response when it ended the sequence in the same step."""
        kept = request.trim_to_reply(self.tokenizer)
        if finished is None:
            return self._remove(request, "stop", keep=kept)
        caches = finished.prompt_cache if kept else None
        return self._finish(request, "stop", caches=caches, token_ids=finished.all_tokens)

    # -- finishing -----------------------------------------------------------------

    def _cancel(self, request: Request, *, keep: bool) -> Completion:
        """Stop a request. A reply cut short keeps what it generated (``keep``);
        a half-read prompt is dropped, leaving the agent's context as it was."""
        if request.paused is not None and request.paused.caches is not None and keep:
            paused, request.paused = request.paused, None
            return self._finish(request, "cancelled", caches=paused.caches, token_ids=paused.token_ids)
        if request.batch_uid is None:
            return self._finish(request, "cancelled")
        return self._remove(request, "cancelled", keep=keep)

    def _remove(self, request: Request, reason: FinishReason, *, keep: bool, error: str | None = None) -> Completion:
        assert self.runner is not None and request.batch_uid is not None
        caches, token_ids = self.runner.remove(request.batch_uid, keep=keep)
        return self._finish(request, reason, caches=caches, token_ids=token_ids, error=error)

    def _finish(self, request: Request, reason: FinishReason, *, caches: list | None = None,
                token_ids: list[int] | None = None, error: str | None = None) -> Completion:
        """Write the turn back into blocks (when kept), release what it reserved, report it."""
        agent = self.contexts.agents.get(request.agent_id) or AgentBlocks(request.agent_id, 0)
        self.scheduler.finished(request)
        self.contexts.touch(request.agent_id)
        if caches is not None and token_ids is not None and caches[0].offset > agent.total_tokens:
            problem = self.contexts.write_back(request, agent, caches, token_ids)
            if problem is not None:
                reason, error = "error", problem
        else:
            self.contexts.release_turn(request, agent)
        return report_completion(self.recorder, self.pool, request, reason, agent, error)
