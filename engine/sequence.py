"""One turn of one agent, from submit to completion: its tokens, its stream, its finish.

Like nano-vllm's ``Sequence``: the request carries its own state, and the step loop only
feeds it tokens. Streaming holds back text that may be the start of a stop string
(``engine.stop_trim``), so no part of a stop string is ever streamed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pool import AgentBlocks, Block

from .outputs import FinishReason, TokenDelta
from .sampling import request_sampler
from .stop_trim import split_at_stop, tokens_of_reply

Phase = Literal["queued", "prefilling", "generating"]


@dataclass(frozen=True, slots=True)
class Paused:
    """A preempted reply's mlx-lm caches (its whole context; on resuming the last token is cut
    and read again; None when they cannot be cut: the turn is recomputed) and the token ids
    they hold."""

    caches: list | None
    token_ids: list[int]


@dataclass(eq=False)
class Request:
    """One turn (engine-internal). ``prompt_ids``: the tokens submitted."""

    uid: int
    agent_id: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    cache: AgentBlocks | None  # the context this turn continues (submit's cache=); None: a fresh one
    seed: int | None = None  # its sampler's own key (``engine.sampling``); None: MLX's global generator
    cache_salt: str | None = None  # a fresh context shares blocks only with contexts of the same salt
    submitted_s: float = field(default_factory=time.perf_counter)
    phase: Phase = "queued"
    batch_uid: int | None = None
    cached_tokens: int = 0  # context tokens not prefilled (continued context or prefix hit)
    reused_tokens: int = 0  # of the submitted prompt, tokens found in shared blocks
    prefix_ids: list[int] = field(default_factory=list)  # a context re-prefilled (unusable spill file)
    prefilled_tokens: int = 0
    generated_ids: list[int] = field(default_factory=list)
    text: str = ""  # streamed so far
    held_text: str = ""  # generated, held back while it may be the start of a stop string
    detokenizer: Any = None
    first_token_s: float | None = None
    # Blocks taken for this turn's new tokens, per layer; written at the end of the turn.
    reserved: dict[int, list[Block]] = field(default_factory=dict)
    preempted: bool = False  # paused for an older reply; it resumes before anything new starts
    paused: Paused | None = None  # a paused reply's K/V and token ids, kept outside the pool
    sampler: Any = field(init=False)  # None: greedy; kept across a pause, so a seeded reply goes on drawing

    def __post_init__(self) -> None:
        self.sampler = request_sampler(self.temperature, self.top_p, self.seed)

    @property
    def prefill_ids(self) -> list[int]:
        """What the model still has to read: a lost context, then the prompt past a prefix hit."""
        return self.prefix_ids + self.prompt_ids[self.reused_tokens :]

    @property
    def context_tokens(self) -> int:
        """Tokens this request's context will hold once its prompt and output are in."""
        return self.cached_tokens + len(self.prefill_ids) + len(self.generated_ids)

    def start(self, batch_uid: int | None, detokenizer: Any) -> None:
        self.batch_uid, self.phase, self.detokenizer = batch_uid, "prefilling", detokenizer

    def pause(self, paused: Paused | None) -> None:
        """Out of the batch for an older reply: ``paused`` holds its K/V to go on from, or
        None for a turn that had not generated yet (it starts again)."""
        self.batch_uid, self.preempted, self.paused = None, True, paused
        if paused is None:
            self.phase, self.prefilled_tokens, self.cached_tokens, self.reused_tokens = "queued", 0, 0, 0

    def resume(self, batch_uid: int, *, recompute: bool) -> None:
        """Back in the batch; ``recompute``: its turn so far is prefilled again."""
        self.batch_uid, self.paused, self.prefilled_tokens = batch_uid, None, 0  # progress counts anew
        if recompute:
            self.phase = "prefilling"

    @property
    def resumed_ids(self) -> list[int]:
        """What a paused reply whose K/V was dropped prefills again: its turn so far."""
        return self.prefill_ids + self.generated_ids

    def on_prefill(self, processed: int) -> int:
        """Record prefill progress; returns the tokens read since the last report."""
        new, self.prefilled_tokens = processed - self.prefilled_tokens, processed
        return new

    def add_token(self, token: int, reason: FinishReason | None, *, is_eos: bool) -> tuple[TokenDelta, bool]:
        """Take one generated token; returns the text it streams and whether a stop string was hit.

        ``reason``: the generator ended the sequence with this token. An EOS token streams no text.
        """
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter()
        self.phase = "generating"
        self.generated_ids.append(token)
        segment = ""
        if not is_eos:
            self.detokenizer.add_token(token)
        if reason is not None:
            self.detokenizer.finalize()
        if not is_eos or reason is not None:
            segment = self.detokenizer.last_segment
        segment, self.held_text, hit = split_at_stop(
            self.text, self.held_text, segment, self.stop, final=reason is not None)
        self.text += segment
        return TokenDelta(self.uid, self.agent_id, token, segment), hit

    def trim_to_reply(self, tokenizer: Any) -> bool:
        """After a stop string: keep only the generated tokens that stream the reported text.
        False when the stop began inside a token (no whole-token context shows that text)."""
        kept = tokens_of_reply(tokenizer, self.generated_ids, self.text)
        if kept is not None:
            del self.generated_ids[kept:]
        return kept is not None
