"""The step output the worker reads, in the shape the local engine gives it (plain values)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delta:
    agent_id: str
    uid: int
    text: str


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished turn. ``blocks`` is always None: the context lives on the server, so every
    turn sends the whole conversation (the app plans no continuation without local blocks)."""

    agent_id: str
    uid: int
    text: str
    finish_reason: str
    error: str | None
    cached_tokens: int
    prompt_tokens: int
    generated_tokens: int
    decode_tok_s: float | None
    blocks: None = None
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerContext:
    """What the agents list shows of a context the server holds: its size (prompt and reply of the last turn)."""

    total_tokens: int


@dataclass(frozen=True, slots=True)
class StepOutput:
    deltas: tuple[Delta, ...]
    prefill: tuple[()]
    completions: tuple[Completion, ...]
