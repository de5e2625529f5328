"""What goes into the engine and what comes out of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pool import AgentBlocks, Block

FinishReason = Literal["stop", "length", "cancelled", "error"]
Phase = Literal["queued", "prefilling", "generating"]


@dataclass(eq=False)
class Request:
    """One turn of one agent, from submit to completion (engine-internal)."""

    uid: int
    agent_id: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    continues: AgentBlocks | None
    submitted_s: float = field(default_factory=time.perf_counter)
    phase: Phase = "queued"
    gen_uid: int | None = None
    cached_tokens: int = 0
    prefilled_tokens: int = 0
    generated_ids: list[int] = field(default_factory=list)
    text: str = ""  # streamed so far
    held_text: str = ""  # generated, held back while it may be the start of a stop string
    detokenizer: Any = None
    first_token_s: float | None = None
    # Blocks taken for this turn's new tokens, per layer; written at the end of the turn.
    reserved: dict[int, list[Block]] = field(default_factory=dict)

    @property
    def context_tokens(self) -> int:
        """Tokens this request's context will hold once its prompt and output are in."""
        return self.cached_tokens + len(self.prompt_ids) + len(self.generated_ids)


@dataclass(frozen=True)
class TokenDelta:
    """New text of one request in one step (for streaming UIs)."""

    uid: int
    agent_id: str
    token: int
    text: str


@dataclass(frozen=True)
class PrefillProgress:
    uid: int
    agent_id: str
    processed: int
    total: int


@dataclass
class Completion:
    """A finished turn. ``blocks`` is the agent's context after it."""

    uid: int
    agent_id: str
    text: str
    token_count: int
    finish_reason: FinishReason
    blocks: AgentBlocks
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    error: str | None = None
    ttft_s: float | None = None
    elapsed_s: float = 0.0

    @property
    def decode_tok_s(self) -> float | None:
        if self.ttft_s is None or self.generated_tokens < 2:
            return None
        decode_s = self.elapsed_s - self.ttft_s
        return (self.generated_tokens - 1) / decode_s if decode_s > 0 else None


@dataclass(frozen=True)
class StepOutput:
    """Everything one call of ``step_once`` did."""

    deltas: list[TokenDelta]
    completions: list[Completion]
    prefill: list[PrefillProgress]
    batch_size: int
    prefill_tokens: int
    ms: float

    @property
    def idle(self) -> bool:
        return not (self.deltas or self.completions or self.prefill)
