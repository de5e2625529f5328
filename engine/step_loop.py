"""One engine step, as nano-vllm's ``LLMEngine.step``: apply commands, admit, run, postprocess.

Admission opens each request's context (continued, restored from disk, or fresh from
shared prefix blocks), reserves the blocks its tokens need, gathers its K/V and hands
it to the runner; postprocessing streams tokens and, when a turn ends, writes it back.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

from pool import AgentBlocks, BlockPool
from telemetry import Recorder
from telemetry.events import Preemption

from .contexts import Contexts
from .reporting import report_completion
from .requests import Completion, FinishReason, PrefillProgress, TokenDelta
from .runner import ModelRunner
from .scheduler import Admission, Blocked, Failed, Scheduler, Started
from .sequence import Paused, Request


class StepLoop:
    def __init__(self, pool: BlockPool, scheduler: Scheduler, contexts: Contexts, runner: ModelRunner | None,
                 tokenizer: Any, recorder: Recorder) -> None:
        self.pool = pool
        self.scheduler = scheduler
        self.contexts = contexts
        self.runner = runner
        self.tokenizer = tokenizer
        self.recorder = recorder

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

    # -- admission -----------------------------------------------------------------

    def admit(self) -> list[Completion]:
        failed = self.scheduler.admit(self._start)
        return [self._finish(request, "error", error=error) for request, error in failed]

    def _start(self, request: Request) -> Admission:
        if request.paused is not None:
            return self._resume(request)
        leader = self.contexts.leader_for(request, self.scheduler.running.values())
        if leader is not None:
            return Blocked(f"waiting for agent {leader.agent_id!r} to prefill the prompt blocks they share")
        try:
            agent, match = self.contexts.open(request)
        except ValueError as exc:
            return Failed(str(exc))
        residency, victims = self.contexts.residency, self.contexts.victims_for(request.agent_id)
        if not self._restored(request, agent):
            return Blocked(self._no_room(request, agent))
        request.cached_tokens = agent.total_tokens
        request.reused_tokens = 0 if request.continues is not None else agent.total_tokens
        # +1: the first generated token enters the cache before it is reported.
        if not residency.reserve(agent, request.reserved, request.context_tokens + 1, victims):
            reason = self._no_room(request, agent)
            self.contexts.back_out(request)
            return Blocked(reason)
        if request.continues is None:
            self.contexts.prefix.report(request.agent_id, len(request.prompt_ids), match, request.reused_tokens)
        residency.touch(request.agent_id)
        caches = self.contexts.materialize(agent, request.context_tokens + 1)
        assert self.runner is not None, "submit refuses requests on a gather-only engine"
        gen_uid = self.runner.insert(request.prefill_ids, max_tokens=request.max_tokens, cache=caches,
                                     context_ids=list(agent.token_ids), temperature=request.temperature,
                                     top_p=request.top_p)
        request.start(gen_uid, self.tokenizer.detokenizer)
        return Started()

    def _restored(self, request: Request, agent: AgentBlocks) -> bool:
        """A spilled context back in blocks (or marked for re-prefill); False: no room yet."""
        residency = self.contexts.residency
        if request.agent_id not in residency.spilled:
            return True
        restored = residency.restore(agent, self.contexts.victims_for(request.agent_id))
        if restored is None:
            return False
        request.prefix_ids = restored.prefix
        if not restored.prefix:
            self.contexts.prefix.register(agent)
        return True

    def _resume(self, request: Request) -> Admission:
        """A paused reply goes on where it stopped: from its kept K/V, reading its last token
        again, or by prefilling its turn so far on its context's blocks."""
        assert self.runner is not None and request.paused is not None
        agent = self.contexts.agents[request.agent_id]
        if not self._restored(request, agent) or not self.contexts.residency.reserve(
                agent, request.reserved, request.context_tokens + 1, self.contexts.victims_for(request.agent_id)):
            return Blocked(self._no_room(request, agent))
        paused, recompute = request.paused, request.paused.caches is None
        if recompute:
            prompt, context = request.resumed_ids, list(agent.token_ids)
            caches = self.contexts.materialize(agent, request.context_tokens + 1)
        else:  # its caches hold its last token too: cut it, so that reading it again gives the next
            prompt, context, caches = paused.token_ids[-1:], paused.token_ids[:-1], paused.caches
            trim_prompt_cache(caches, 1)
        gen_uid = self.runner.insert(prompt, max_tokens=request.max_tokens - len(request.generated_ids),
                                     cache=caches, context_ids=context, temperature=request.temperature,
                                     top_p=request.top_p)
        request.resume(gen_uid, recompute=recompute)
        return Started()

    def _no_room(self, request: Request, agent: AgentBlocks) -> str:
        needed = self.contexts.writer.num_blocks_needed(agent, request.reserved, request.context_tokens + 1)
        return (
            f"not enough free blocks for this turn: needs {needed}, {self.pool.free_blocks()} free of "
            f"{self.pool.total_blocks}, and no idle agent could be spilled to make room"
        )

    # -- running ---------------------------------------------------------------------

    def advance(self, deltas: list[TokenDelta], prefill: list[PrefillProgress], completions: list[Completion]) -> int:
        """One batched model step; returns the prompt tokens it read."""
        assert self.runner is not None
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
            processed, total = response.progress
            prefill_tokens += request.on_prefill(processed)
            if request.phase == "generating":  # a paused reply reading its last token again
                continue
            prefill.append(PrefillProgress(request.uid, request.agent_id, processed, total))
            if request.continues is None and not request.preempted:  # for agents that start the same way
                computed = request.cached_tokens + min(processed, total - 1)
                self.contexts.write_prompt_blocks(request, computed, partial(self.runner.context_rows, response.uid))
        short: list[Request] = []  # replies whose next token has no block yet
        for response in gen_responses:
            request = self.scheduler.running[response.uid]
            done = self._on_token(request, response, deltas)
            if done is not None:
                completions.append(done)
            elif not self._reserve_next(request):
                short.append(request)
        completions.extend(self._make_room(short))
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

    def _reserve_next(self, request: Request) -> bool:
        agent = self.contexts.agents[request.agent_id]
        return self.contexts.residency.reserve(agent, request.reserved, request.context_tokens + 1,
                                               self.contexts.victims_for(request.agent_id))

    # -- preemption ------------------------------------------------------------------

    def _make_room(self, short: list[Request]) -> list[Completion]:
        """Blocks for replies that ran out, oldest first: the youngest running request is paused
        (possibly the reply itself) until they fit, as vLLM preempts. Only a reply that
        outgrows the whole pool alone ends, with an error."""
        done: list[Completion] = []
        for request in short:
            while request.gen_uid in self.scheduler.running and not self._reserve_next(request):
                victim = self.scheduler.youngest_running()
                if victim is request and len(self.scheduler.running) == 1:
                    done.append(self._outgrown(request))
                    break
                assert victim is not None
                self._preempt(victim)
        return done

    def _preempt(self, request: Request) -> None:
        """Out of the batch with its K/V kept aside (its last token is read again on resuming),
        or, before its first token, to start over; its reservation goes back."""
        assert self.runner is not None and request.gen_uid is not None
        generating = request.phase == "generating"
        caches, token_ids = self.runner.remove(request.gen_uid, keep=generating)
        recompute = not generating or caches is None or not can_trim_prompt_cache(caches)
        if generating:
            self.contexts.writer.release(request.reserved)
        else:
            self.contexts.release_turn(request, self.contexts.agents[request.agent_id])
        self.scheduler.pause(request)
        kept = None if recompute else caches
        request.pause(Paused(kept, list(token_ids or [])) if generating else None)
        if self.recorder.enabled:
            self.recorder.publish(Preemption(uid=request.uid, agent_id=request.agent_id, recompute=recompute,
                                             generated_tokens=len(request.generated_ids),
                                             num_blocks=self.pool.agent_block_count(request.agent_id)))

    def _outgrown(self, request: Request) -> Completion:
        agent = self.contexts.agents[request.agent_id]
        needed = self.contexts.writer.num_blocks_needed(agent, request.reserved, request.context_tokens + 1)
        error = (
            f"this reply outgrew the whole pool after {len(request.generated_ids)} tokens: it needs {needed} "
            f"more blocks, {self.pool.free_blocks()} free of {self.pool.total_blocks} with every other context "
            "spilled; give the engine more KV memory or ask for fewer tokens"
        )
        return self._remove(request, "error", keep=False, error=error)

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
        if request.gen_uid is None:
            return self._finish(request, "cancelled")
        return self._remove(request, "cancelled", keep=keep)

    def _remove(self, request: Request, reason: FinishReason, *, keep: bool, error: str | None = None) -> Completion:
        assert self.runner is not None and request.gen_uid is not None
        caches, token_ids = self.runner.remove(request.gen_uid, keep=keep)
        return self._finish(request, reason, caches=caches, token_ids=token_ids, error=error)

    def _finish(self, request: Request, reason: FinishReason, *, caches: list | None = None,
                token_ids: list[int] | None = None, error: str | None = None) -> Completion:
        """Write the turn back into blocks (when kept), release what it reserved, report it."""
        agent = self.contexts.agents.get(request.agent_id) or AgentBlocks(request.agent_id, 0)
        self.scheduler.finished(request)
        self.contexts.residency.touch(request.agent_id)
        if caches is not None and token_ids is not None and caches[0].offset > agent.total_tokens:
            problem = self.contexts.write_back(request, agent, caches, token_ids)
            if problem is not None:
                reason, error = "error", problem
        else:
            self.contexts.release_turn(request, agent)
        return report_completion(self.recorder, self.pool, request, reason, agent, error)
