"""The owner thread's book of requests and agents: which request runs as which engine uid, each
open agent's last known context, and the idle conversations stateless requests continue.

Owner thread only. Every outcome becomes an event (``engine.owner_messages``) handed to
``emit``; a refused request is its own event, never an exception out of here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .conversations import Claim, ConversationTable
from .owner_messages import (
    Drop,
    OwnerEvent,
    RequestAccepted,
    RequestEnded,
    RequestRefused,
    Submit,
    TokensGenerated,
)

if TYPE_CHECKING:
    from pool import AgentBlocks

    from .protocol import Engine
    from .outputs import Completion, StepOutput

logger = logging.getLogger(__name__)
CONTEXT_GONE = "the agent's context is gone; send again to start a fresh one"


@dataclass(eq=False)
class Flight:
    """A request the engine runs."""

    request_id: int
    uid: int
    agent_id: str
    cached_tokens: int
    stateless: bool  # its agent came from the conversation table, and goes back to it
    dropped: bool = False


class Requests:
    """See the module docstring. ``agents``: open agent -> its last known context's token ids."""

    def __init__(self, emit: Callable[[OwnerEvent], None], *, max_conversations: int) -> None:
        self._emit = emit
        self.conversations = ConversationTable(max_conversations)
        self.agents: dict[str, tuple[int, ...]] = {}
        self._by_request: dict[int, Flight] = {}
        self._by_uid: dict[int, Flight] = {}
        self._eos_ids: frozenset[int] = frozenset()

    def running_agent_ids(self) -> set[str]:
        return {flight.agent_id for flight in self._by_uid.values()}

    def attach(self, engine: Engine) -> None:
        """A new engine (the first, or after a failure) starts from here."""
        self._eos_ids = frozenset(engine.tokenizer.eos_token_ids)

    def lose_all(self) -> tuple[int, ...]:
        """The engine failed: every request in it is lost (their ids); stateless agents go too."""
        lost = tuple(sorted(self._by_request))
        for flight in self._by_request.values():
            if flight.stateless:
                self.agents.pop(flight.agent_id, None)
        self._by_request.clear()
        self._by_uid.clear()
        return lost

    # -- commands --------------------------------------------------------------------------

    def submit(self, engine: Engine, command: Submit) -> None:
        stateless = command.agent_id is None
        claim = self._claim(engine, command) if stateless else Claim(command.agent_id, 0)  # type: ignore[arg-type]
        continues = claim.continues if stateless else command.continues
        cache = engine.agent_blocks(claim.agent_id) if continues else None
        if continues and cache is None:
            self._emit(RequestRefused(command.request_id, CONTEXT_GONE, "context_gone"))
            return
        prompt = command.prompt[claim.cached_tokens:] if stateless else command.prompt
        try:
            uid = self._start(engine, command, claim.agent_id, prompt, cache)
        except ValueError as exc:
            self._put_back(engine, claim, stateless)
            self._emit(RequestRefused(command.request_id, str(exc), "invalid"))
            return
        except Exception as exc:  # one request's failure is its own: the thread goes on with the others
            logger.exception("request %s failed before it ran", command.request_id)
            self._put_back(engine, claim, stateless)
            self._emit(RequestRefused(command.request_id, f"{type(exc).__name__}: {exc}", "internal"))
            return
        flight = Flight(command.request_id, uid, claim.agent_id, claim.cached_tokens, stateless)
        self._by_request[flight.request_id] = self._by_uid[uid] = flight
        self.agents.setdefault(claim.agent_id, ())
        self._emit(RequestAccepted(flight.request_id, flight.agent_id, claim.cached_tokens))

    def cancel(self, engine: Engine, request_id: int) -> None:
        if (flight := self._by_request.get(request_id)) is not None:
            engine.cancel(flight.uid)

    def drop(self, engine: Engine, command: Drop) -> None:
        flight = self._by_request.get(command.request_id)
        if flight is None or flight.dropped:
            return  # finished already
        flight.dropped = True
        # Closing (not just cancelling) frees the blocks now: nobody will continue a reply they never got.
        self.close_agent(engine, flight.agent_id)

    def close_agent(self, engine: Engine, agent_id: str) -> None:
        engine.close_agent(agent_id)
        self.agents.pop(agent_id, None)
        self.conversations.forget(agent_id)

    def _claim(self, engine: Engine, command: Submit) -> Claim:
        claim = self.conversations.claim(command.prompt, command.cache_salt)  # type: ignore[arg-type]
        if claim.continues and engine.agent_blocks(claim.agent_id) is None:
            self.close_agent(engine, claim.agent_id)  # cannot happen while the table is kept right
            return self._claim(engine, command)
        return claim

    def _start(self, engine: Engine, command: Submit, agent_id: str, prompt: str | tuple[int, ...],
               cache: AgentBlocks | None) -> int:
        return engine.submit(agent_id, prompt if isinstance(prompt, str) else list(prompt), cache,
                             command.max_tokens, temperature=command.temperature, top_p=command.top_p,
                             stop=command.stop, seed=command.seed, cache_salt=command.cache_salt)

    def _put_back(self, engine: Engine, claim: Claim, stateless: bool) -> None:
        """A refused stateless request leaves a continued conversation as it was: idle, same context."""
        if stateless and claim.continues:
            self._release(engine, claim.agent_id)

    # -- what a step did -------------------------------------------------------------------

    def publish(self, engine: Engine, out: StepOutput) -> None:
        step = TokensGenerated()
        for delta in out.deltas:
            flight = self._by_uid.get(delta.uid)
            if flight is not None and not flight.dropped:
                step.text[flight.request_id] = step.text.get(flight.request_id, "") + delta.text
                step.num_tokens[flight.request_id] = step.num_tokens.get(flight.request_id, 0) + 1
        for progress in out.prefill:
            if (flight := self._by_uid.get(progress.uid)) is not None and not flight.dropped:
                step.prefill[flight.request_id] = (progress.processed, progress.total)
        if step.text or step.num_tokens or step.prefill:
            self._emit(step)
        for completion in out.completions:
            self._end(engine, completion)

    def _end(self, engine: Engine, completion: Completion) -> None:
        flight = self._by_uid.pop(completion.uid, None)
        if flight is None:
            return  # not one of ours (submitted to the engine directly)
        del self._by_request[flight.request_id]
        blocks = completion.blocks
        if blocks is not None and flight.agent_id in self.agents:
            self.agents[flight.agent_id] = tuple(blocks.token_ids)
        if flight.stateless and not flight.dropped:
            self._release(engine, flight.agent_id)
        ids = completion.token_ids
        self._emit(RequestEnded(
            flight.request_id, flight.agent_id, completion.text, completion.finish_reason, completion.error,
            completion.prompt_tokens, completion.cached_tokens, completion.generated_tokens,
            blocks.total_tokens if blocks is not None else 0, tuple(blocks.token_ids) if blocks is not None else (),
            bool(ids) and ids[-1] in self._eos_ids, completion.decode_tok_s, completion.ttft_s,
        ))

    def _release(self, engine: Engine, agent_id: str) -> None:
        """An idle stateless agent goes back to the table with its context (or is closed without one)."""
        blocks = engine.agent_blocks(agent_id)
        context = blocks.token_ids if blocks is not None else []
        salt = blocks.cache_salt if blocks is not None else None
        for evicted in self.conversations.release(agent_id, context, salt):
            self.close_agent(engine, evicted)
        if not context:
            self.close_agent(engine, agent_id)
