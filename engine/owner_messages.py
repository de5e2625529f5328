"""What crosses between a front end and the engine's owner thread (``engine.owner_thread``).

Commands go in (``EngineOwner.send``); events come out through the owner's ``on_event``
callback, called on the owner thread: the TUI posts each as a Textual message, the server
routes each to its request's asyncio queue. Everything here is a frozen dataclass of plain
values or immutable snapshots, never an engine object. One id names a request from end to
end: ``request_id``, chosen by the sender (``EngineOwner.new_request_id``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # a front end imports this before MLX may load (the BLAS re-exec)
    from pool import PoolSnapshot
    from telemetry import Event, TelemetryState

    from .protocol import Render

# -- commands ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submit:
    """Run one turn. With ``agent_id``, that agent's turn: ``continues`` extends its context (the
    prompt holds only the new part). Without, a stateless request (token ids): it continues the
    idle conversation whose whole context its prompt starts with, else a fresh one."""

    request_id: int
    prompt: str | tuple[int, ...]
    max_tokens: int
    agent_id: str | None = None
    continues: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    cache_salt: str | None = None  # prefix blocks and conversations shared only within one salt


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop a request; it ends ``cancelled`` and the agent keeps what it generated."""

    request_id: int


@dataclass(frozen=True, slots=True)
class Drop:
    """The requester went away: stop the request and free its agent's blocks now."""

    request_id: int


@dataclass(frozen=True, slots=True)
class CloseAgent:
    agent_id: str


@dataclass(frozen=True, slots=True)
class Adopt:
    """Take over an agent's context from an earlier run (a resumed session)."""

    agent_id: str
    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ForkAgent:
    """Give ``agent_id`` (a new agent) every block of ``source_agent_id``'s context."""

    source_agent_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class Truncate:
    """Keep the first ``num_tokens`` of an idle agent's context (regenerate, edit a message)."""

    agent_id: str
    num_tokens: int


@dataclass(frozen=True, slots=True)
class Inspect:
    """Run ``fn(owner)`` between steps and put its answer (or its exception) in ``future``."""

    fn: Callable[[Any], Any]
    future: Future


Command = Submit | Cancel | Drop | CloseAgent | Adopt | ForkAgent | Truncate | Inspect

# -- events --------------------------------------------------------------------------------


class _Event:
    """``replaceable``: a newer event of the kind makes one still queued stale (high-rate kinds)."""

    __slots__ = ()
    replaceable: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class EngineLoading(_Event):
    """Progress while the model loads (or converts, the first time)."""

    replaceable: ClassVar[bool] = True
    text: str
    fraction: float


@dataclass(frozen=True, slots=True)
class EngineReady(_Event):
    """The engine is up: ``render`` applies its chat template; ``pool`` is its pool now."""

    render: Render
    eos_text: str
    pool: PoolSnapshot


@dataclass(frozen=True, slots=True)
class EngineFailed(_Event):
    """The engine could not be built, or a step failed.

    ``restarting``: a new engine is being built (an ``EngineReady`` follows) and the
    requests ``request_ids``, which were in the failed engine, ended with ``error``.
    """

    error: str
    restarting: bool = False
    request_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestAccepted(_Event):
    """The engine took the request; ``agent_id`` runs it (its blocks' owner), continuing
    ``cached_tokens`` of an idle conversation's context (stateless requests)."""

    request_id: int
    agent_id: str
    cached_tokens: int = 0


RefusalReason = Literal["invalid", "context_gone", "internal"]


@dataclass(frozen=True, slots=True)
class RequestRefused(_Event):
    """The engine did not take the request (nothing changed): ``invalid`` (a ValueError at
    submit, e.g. a context larger than the pool), ``context_gone`` (the context to continue is
    no longer there), ``internal`` (an unexpected failure: a bug, logged)."""

    request_id: int
    error: str
    reason: RefusalReason


@dataclass(frozen=True, slots=True)
class TokensGenerated(_Event):
    """Everything one engine step produced, by request id.

    ``text``: the new text; ``num_tokens``: tokens generated in the step (a token may add
    no text); ``prefill``: (prompt tokens processed, prompt tokens in all).
    """

    text: dict[int, str] = field(default_factory=dict)
    num_tokens: dict[int, int] = field(default_factory=dict)
    prefill: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestEnded(_Event):
    """A request finished (``finish_reason`` stop, length, cancelled or error with ``error``).

    ``prompt_tokens``: tokens prefilled this turn; ``cached_tokens``: context tokens not
    prefilled; ``context_ids``: the agent's whole context after the turn (``context_tokens``
    long; empty where the engine keeps no context here).
    """

    request_id: int
    agent_id: str
    text: str
    finish_reason: str
    error: str | None
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    context_tokens: int
    context_ids: tuple[int, ...]
    ends_with_eos: bool
    decode_tok_s: float | None
    ttft_s: float | None = None  # submitted to first token (None where the engine does not say)


@dataclass(frozen=True, slots=True)
class ContextAdopted(_Event):
    """An agent's context from an earlier run is registered; ``text`` is its decoded text, or
    None where the engine keeps no context here."""

    agent_id: str
    text: str | None
    num_tokens: int


@dataclass(frozen=True, slots=True)
class Forked(_Event):
    """``agent_id`` now holds every block of ``source_agent_id``'s context (no K/V copied)."""

    source_agent_id: str
    agent_id: str
    num_tokens: int
    num_blocks: int


@dataclass(frozen=True, slots=True)
class ForkFailed(_Event):
    """The engine could not fork (busy or closed source, no context, no engine support)."""

    source_agent_id: str
    agent_id: str
    error: str


@dataclass(frozen=True, slots=True)
class Truncated(_Event):
    """``agent_id``'s context now holds its first ``num_tokens`` (``token_ids``) in ``num_blocks`` blocks."""

    agent_id: str
    num_tokens: int
    num_blocks: int
    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TruncateFailed(_Event):
    """The context was not rolled back (a running agent, too few tokens, an engine that cannot):
    the agent's next turn should start a fresh context."""

    agent_id: str
    num_tokens: int
    error: str


@dataclass(frozen=True, slots=True)
class EngineStats(_Event):
    """Pool and telemetry snapshot, a few times a second at most (``stats_interval_s``)."""

    replaceable: ClassVar[bool] = True
    pool: PoolSnapshot
    telemetry: TelemetryState
    num_queued: int
    num_active: int
    context_tokens: dict[str, int]  # open agent -> tokens in its context
    spilled: frozenset[str] = frozenset()  # agents whose context was spilled to disk


@dataclass(frozen=True, slots=True)
class TelemetryBatch(_Event):
    """The telemetry events published since the last batch (owners built with ``telemetry_events``)."""

    events: tuple[Event, ...]


OwnerEvent = (EngineLoading | EngineReady | EngineFailed | RequestAccepted | RequestRefused | TokensGenerated
              | RequestEnded | ContextAdopted | Forked | ForkFailed | Truncated | TruncateFailed | EngineStats
              | TelemetryBatch)
# Called on the owner thread for every event; it must hand the event over and return at once.
OnEvent = Callable[[OwnerEvent], object]
