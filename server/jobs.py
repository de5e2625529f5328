"""What crosses between the HTTP routes (asyncio) and the engine thread.

A route builds a ``Job`` and puts ``Submit`` on the engine thread's inbox; the thread
answers through the job's ``sink`` with ``Started`` or ``Rejected``, then ``TextChunk``s
(one per step at most) and one ``Finished``. Frozen dataclasses: safe to hand over.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Started:
    prompt_tokens: int
    cached_tokens: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """The engine refused the request before it ran (a 4xx for the client)."""

    message: str
    status: int
    code: str


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str
    num_tokens: int


@dataclass(frozen=True, slots=True)
class Finished:
    text: str
    finish_reason: Literal["stop", "length", "cancelled", "error"]
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    error: str | None = None


JobEvent = Started | Rejected | TextChunk | Finished
Sink = Callable[[JobEvent], None]


@dataclass(frozen=True, slots=True)
class Job:
    job_id: int
    prompt_ids: tuple[int, ...]
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    arrived_s: float  # time.monotonic() when the request came in (TTFT counts from here, like vLLM)
    sink: Sink


# -- commands to the engine thread ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submit:
    job: Job


@dataclass(frozen=True, slots=True)
class Drop:
    """The client went away: stop the job and free its agent's blocks."""

    job_id: int


@dataclass(frozen=True, slots=True)
class Inspect:
    """Run ``fn(engine_thread)`` between steps and put its answer in ``future`` (snapshots, stats)."""

    fn: Callable[[Any], Any]
    future: Future


Command = Submit | Drop | Inspect
