"""Messages the engine thread posts to the app, and the commands the app sends back.

Everything here crosses a thread, so it holds plain values or immutable snapshots,
never engine objects. High-rate messages define ``can_replace`` so that a stale one
still waiting in the queue is dropped for the newer one (toolong's pattern).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:  # the UI thread never imports MLX through these
    from pool import PoolSnapshot
    from telemetry import TelemetryState

    from tui.chat import Renderer


# -- engine thread -> app ------------------------------------------------------


@dataclass
class ModelLoading(Message):
    """Progress while the model loads (or converts, the first time)."""

    text: str
    fraction: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ModelLoading)


@dataclass
class EngineReady(Message):
    """The engine is up; ``render`` applies the model's chat template."""

    description: str
    render: Renderer
    eos_text: str


@dataclass
class EngineFailed(Message):
    """The model or the engine could not be built, or a step failed.

    ``restarting``: a new engine is being built (an ``EngineReady`` follows) and the
    turns of ``agent_ids``, which were in the failed engine, ended with ``error``.
    """

    error: str
    restarting: bool = False
    agent_ids: tuple[str, ...] = ()


@dataclass
class Submitted(Message):
    """The engine accepted a turn."""

    agent_id: str
    uid: int


@dataclass
class SubmitFailed(Message):
    """The engine refused a turn (``ValueError`` at submit): nothing changed."""

    agent_id: str
    text: str
    error: str


@dataclass
class TokensGenerated(Message):
    """Everything one engine step produced, for all agents together.

    ``text`` maps an agent id to its new text; ``prefill`` maps an agent to
    (prompt tokens processed, prompt tokens in all); ``num_tokens`` maps an agent
    to the tokens it generated in the step (a token may add no text).
    """

    text: dict[str, str]
    prefill: dict[str, tuple[int, int]] = field(default_factory=dict)
    num_tokens: dict[str, int] = field(default_factory=dict)


@dataclass
class RequestFinished(Message):
    """A turn ended normally or was cancelled; the numbers fix the context text."""

    agent_id: str
    uid: int
    text: str
    finish_reason: str
    cached_tokens: int
    prompt_tokens: int
    generated_tokens: int
    context_tokens: int
    ends_with_eos: bool
    decode_tok_s: float | None
    token_ids: tuple[int, ...] = ()  # the agent's whole context after the turn, for the session log


@dataclass
class RequestFailed(Message):
    """A turn failed inside the engine (pool full, model error)."""

    agent_id: str
    uid: int
    error: str
    context_tokens: int


@dataclass
class ContextAdopted(Message):
    """An agent's context from an earlier run is registered; ``text`` is its decoded text, if known."""

    agent_id: str
    text: str | None
    num_tokens: int


@dataclass
class EngineStats(Message):
    """Pool and telemetry snapshot, posted a few times a second at most."""

    pool: PoolSnapshot
    telemetry: TelemetryState
    num_queued: int
    num_active: int
    context_tokens: dict[str, int]
    spilled: frozenset[str] = frozenset()  # agents whose context was spilled to disk

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EngineStats)


@dataclass
class Forked(Message):
    """``agent_id`` now holds every block of ``source_agent_id``'s context (no K/V copied)."""

    source_agent_id: str
    agent_id: str
    num_tokens: int
    num_blocks: int


@dataclass
class ForkFailed(Message):
    """The engine could not fork (busy or closed source, no context, no engine support)."""

    source_agent_id: str
    agent_id: str
    error: str


ENGINE_MESSAGES = (ModelLoading, EngineReady, EngineFailed, Submitted, SubmitFailed, TokensGenerated,
                   RequestFinished, RequestFailed, ContextAdopted, EngineStats, Forked, ForkFailed)


# -- app -> engine thread (plain values on a queue.Queue) ----------------------


@dataclass(frozen=True, slots=True)
class SubmitTurn:
    agent_id: str
    text: str  # the user's text, returned on failure so it is never lost
    prompt: str
    continues: bool
    max_tokens: int
    temperature: float


@dataclass(frozen=True, slots=True)
class CancelTurn:
    agent_id: str


@dataclass(frozen=True, slots=True)
class CloseAgent:
    agent_id: str


@dataclass(frozen=True, slots=True)
class AdoptContext:
    """Take over an agent's context from an earlier run (a resumed session)."""

    agent_id: str
    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ForkAgent:
    """Give ``agent_id`` (a new agent) the blocks of ``source_agent_id``'s context."""

    source_agent_id: str
    agent_id: str


Command = SubmitTurn | CancelTurn | CloseAgent | AdoptContext | ForkAgent
# Posts a message to the app; ``App.post_message`` is thread-safe.
Post = Callable[[Message], object]
