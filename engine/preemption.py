"""Preemption: a reply that runs out of blocks takes them from the youngest running request.

A reply's K/V lives in mlx-lm's batch cache until its turn ends; blocks are reserved for
it as it grows so the write-back cannot fail. When the pool is short (and no idle agent can
be spilled), the request admitted last is paused, as vLLM's scheduler preempts: a reply
leaves the batch with its caches kept aside (outside the pool, where they already were)
and resumes where it stopped, reading its last token again; a turn that had not generated
yet gives up its reservation and starts again. Paused requests go to the front of the queue
and nothing new overtakes them. Only a reply that alone outgrows the whole pool ends.
"""

from __future__ import annotations

from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

from pool import BlockPool
from telemetry import Recorder
from telemetry.events import Preemption

from .contexts import Contexts
from .runner import ModelRunner
from .scheduler import Admission, Blocked, Scheduler, Started
from .sequence import Paused, Request


class Preempter:
    def __init__(self, pool: BlockPool, scheduler: Scheduler, contexts: Contexts, runner: ModelRunner,
                 recorder: Recorder) -> None:
        self.pool = pool
        self.scheduler = scheduler
        self.contexts = contexts
        self.runner = runner
        self.recorder = recorder

    def reserve_next(self, request: Request) -> bool:
        """Blocks for the reply's next token (it enters the cache before it is reported)."""
        agent = self.contexts.agents[request.agent_id]
        return self.contexts.reserve(request, agent, request.context_tokens + 1)

    def make_room(self, short: list[Request]) -> list[Request]:
        """Blocks for replies that ran out, oldest first, pausing the youngest running request
        (possibly the reply itself) until they fit; returns the replies that outgrow the pool
        alone (the caller ends them)."""
        outgrown: list[Request] = []
        for request in short:
            while request.batch_uid in self.scheduler.running and not self.reserve_next(request):
                victim = self.scheduler.youngest_running()
                assert victim is not None
                if victim is request and len(self.scheduler.running) == 1:
                    outgrown.append(request)
                    break
                self.pause(victim)
        return outgrown

    def outgrown_error(self, request: Request) -> str:
        agent = self.contexts.agents[request.agent_id]
        needed = self.contexts.writer.num_blocks_needed(agent, request.reserved, request.context_tokens + 1)
        return (
            f"this reply outgrew the whole pool after {len(request.generated_ids)} tokens: it needs {needed} "
            f"more blocks, {self.pool.free_blocks()} free of {self.pool.total_blocks} with every other context "
            "spilled; give the engine more KV memory or ask for fewer tokens"
        )

    def pause(self, request: Request) -> None:
        """Out of the batch, its K/V kept aside (a reply), or to start over (a turn still
        reading its prompt); its reservation goes back."""
        assert request.batch_uid is not None
        generating = request.phase == "generating"
        caches, token_ids = self.runner.remove(request.batch_uid, keep=generating)
        recompute = not generating or caches is None or not can_trim_prompt_cache(caches)
        if generating:
            self.contexts.writer.release(request.reserved)
        else:
            self.contexts.release_turn(request, self.contexts.agents[request.agent_id])
        self.scheduler.pause(request)
        request.pause(Paused(None if recompute else caches, list(token_ids or [])) if generating else None)
        if self.recorder.enabled:
            self.recorder.publish(Preemption(uid=request.uid, agent_id=request.agent_id, recompute=recompute,
                                             generated_tokens=len(request.generated_ids),
                                             num_blocks=self.pool.agent_block_count(request.agent_id)))

    def resume(self, request: Request) -> Admission:
        """A paused reply goes on where it stopped: from its kept K/V, reading its last token
        again, or by prefilling its turn so far on its context's blocks."""
        assert request.paused is not None
        agent = self.contexts.agents[request.agent_id]
        need = request.context_tokens + 1
        if not self.contexts.bring_in(request, agent) or not self.contexts.reserve(request, agent, need):
            return Blocked(self.contexts.no_room(request, agent, need))
        paused, recompute = request.paused, request.paused.caches is None
        if recompute:
            prompt, context = request.resumed_ids, list(agent.token_ids)
            caches = self.contexts.materialize(agent, need)
        else:  # its caches hold its last token too: cut it, so that reading it again gives the next
            prompt, context, caches = paused.token_ids[-1:], paused.token_ids[:-1], paused.caches
            trim_prompt_cache(caches, 1)
        batch_uid = self.runner.insert(prompt, max_tokens=request.max_tokens - len(request.generated_ids),
                                     cache=caches, context_ids=context, sampler=request.sampler)
        request.resume(batch_uid, recompute=recompute)
        return Started()
