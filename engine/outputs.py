"""What comes out of the engine: streamed deltas, prefill progress, finished turns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pool import AgentBlocks

FinishReason = Literal["stop", "length", "cancelled", "error"]


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
    """A finished turn. ``blocks`` is the agent's context after it.

    ``prompt_tokens``: tokens prefilled this turn; ``cached_tokens``: context tokens not
    prefilled (the continued context, or a fresh prompt's prefix found in shared blocks);
    ``token_count``: the prompt's tokens (reused and prefilled) plus the generated ones.
    """

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
