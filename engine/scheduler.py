"""Who waits, who runs, and which idle agents may make room: the engine's scheduler.

No MLX and no tensors, so it is testable alone (as nano-vllm's ``scheduler.py``). Other
threads hand it requests and commands (``add``, ``cancel``, ``close``, ``adopt``) under
its one lock; everything else runs on the engine's owner thread.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from pool import AgentBlocks

from .sequence import Request


@dataclass(frozen=True)
class Started:
    """The request is in the batch."""


@dataclass(frozen=True)
class Blocked:
    """The pool cannot hold the request yet; ``reason`` says why, in case it never will."""

    reason: str


@dataclass(frozen=True)
class Failed:
    error: str


@dataclass(frozen=True)
class Done:
    """The request finished as it started (a continued turn whose first token ended it)."""


Admission = Started | Blocked | Failed | Done


@dataclass
class Commands:
    """What other threads asked for since the last step."""

    cancel_uids: set[int] = field(default_factory=set)
    close_agent_ids: set[str] = field(default_factory=set)
    adopted: list[AgentBlocks] = field(default_factory=list)


class Scheduler:
    def __init__(self, max_batch_size: int) -> None:
        self.max_batch_size = max_batch_size
        self._lock = threading.Lock()  # guards the inbox, the commands and the agent sets
        self._uids = itertools.count()
        self._inbox: deque[Request] = deque()
        self._commands = Commands()
        self._busy: dict[str, int] = {}  # agent -> uid of its unfinished request
        self._closed: set[str] = set()
        self.waiting: deque[Request] = deque()  # admitted, not yet in the batch (owner thread)
        self.running: dict[int, Request] = {}  # by generator uid (owner thread)

    # -- any thread ------------------------------------------------------------

    def add(self, agent_id: str, make: Callable[[int], Request]) -> Request:
        """Queue the request ``make(uid)`` builds; ValueError for a closed or busy agent
        (or whatever ``make`` raises), with nothing queued."""
        with self._lock:
            if agent_id in self._closed:
                raise ValueError(f"agent {agent_id!r} was closed; start a new agent id")
            if agent_id in self._busy:
                raise ValueError(
                    f"agent {agent_id!r} already has request {self._busy[agent_id]} in flight; "
                    "wait for it or cancel it"
                )
            request = make(next(self._uids))
            self._busy[agent_id] = request.uid
            self._inbox.append(request)
            return request

    def cancel(self, uid: int) -> None:
        with self._lock:
            self._commands.cancel_uids.add(uid)

    def close(self, agent_id: str) -> None:
        with self._lock:
            self._commands.close_agent_ids.add(agent_id)
            self._closed.add(agent_id)

    def adopt(self, agent: AgentBlocks) -> None:
        with self._lock:
            if agent.agent_id in self._busy or agent.agent_id in self._closed:
                raise ValueError(f"agent {agent.agent_id!r} is busy or closed; adopt it before using it")
            self._commands.adopted.append(agent)

    def check_fork(self, source_id: str, new_id: str) -> None:
        """ValueError unless ``source_id`` may be forked into ``new_id`` now."""
        with self._lock:
            for agent_id, what in ((source_id, "source"), (new_id, "new agent")):
                if not isinstance(agent_id, str) or not agent_id:
                    raise ValueError(f"{what} id must be a non-empty string, got {agent_id!r}")
                if agent_id in self._closed:
                    raise ValueError(f"agent {agent_id!r} was closed; fork from or into an open agent id")
                if agent_id in self._busy:
                    raise ValueError(f"agent {agent_id!r} has a turn in flight; fork when it ends, into a new id")

    def check_idle(self, agent_id: str, call: str) -> None:
        """ValueError unless ``agent_id`` is open with no turn queued or running."""
        with self._lock:
            if agent_id in self._busy or agent_id in self._closed:
                state = "running" if agent_id in self._busy else "closed"
                raise ValueError(f"agent {agent_id!r} is {state}; {call} an idle agent's context "
                                 "(cancel its turn first)")

    def is_busy(self, agent_id: str) -> bool:
        with self._lock:
            return agent_id in self._busy

    def is_closed(self, agent_id: str) -> bool:
        with self._lock:
            return agent_id in self._closed

    def has_work(self) -> bool:
        with self._lock:
            c = self._commands
            pending = self._inbox or c.cancel_uids or c.close_agent_ids or c.adopted
            return bool(pending or self.waiting or self.running)

    @property
    def num_queued(self) -> int:
        return len(self._inbox) + len(self.waiting)

    # -- owner thread -------------------------------------------------------------

    def take_commands(self) -> Commands:
        with self._lock:
            commands, self._commands = self._commands, Commands()
            return commands

    def unfinished(self) -> list[Request]:
        with self._lock:
            inbox = list(self._inbox)
        return inbox + list(self.waiting) + list(self.running.values())

    def admit(self, start: Callable[[Request], Admission]) -> list[tuple[Request, str]]:
        """Start waiting requests while the batch has room; returns (request, error) to fail.

        A request the pool cannot hold yet keeps its place while later ones that fit go
        ahead; when nothing runs, nothing will free blocks for it, so the first one fails.
        """
        with self._lock:
            self.waiting.extend(self._inbox)
            self._inbox.clear()
        failed: list[tuple[Request, str]] = []
        blocked: list[tuple[Request, str]] = []
        while self.waiting and len(self.running) < self.max_batch_size:
            request = self.waiting.popleft()
            match start(request):
                case Started():
                    assert request.batch_uid is not None, "a started request has a generator uid"
                    self.running[request.batch_uid] = request
                case Blocked(reason):
                    blocked.append((request, reason))
                    if request.preempted:  # nothing new overtakes a paused reply
                        break
                case Failed(error):
                    failed.append((request, error))
                case Done():
                    pass
        if blocked and not self.running:
            failed.append(blocked.pop(0))
        self.waiting.extendleft(reversed([request for request, _ in blocked]))
        return failed

    def youngest_running(self) -> Request | None:
        """The request admitted last (the first to preempt, as vLLM's scheduler does)."""
        return next(reversed(self.running.values()), None)

    def pause(self, request: Request) -> None:
        """A running request leaves the batch for the front of the queue."""
        assert request.batch_uid is not None and self.running.get(request.batch_uid) is request
        del self.running[request.batch_uid]
        self.waiting.appendleft(request)

    def finished(self, request: Request) -> None:
        """Forget a request wherever it is; its agent may submit again."""
        if request.batch_uid is not None:
            self.running.pop(request.batch_uid, None)
        if request in self.waiting:
            self.waiting.remove(request)
        with self._lock:
            if request in self._inbox:
                self._inbox.remove(request)
            self._busy.pop(request.agent_id, None)

    def running_agent_ids(self) -> set[str]:
        return {r.agent_id for r in self.running.values()}


def spill_order(
    agents: Iterable[AgentBlocks], last_used: Mapping[str, float], *, running: Collection[str], exclude: str
) -> list[AgentBlocks]:
    """Agents whose blocks may go to disk, least recently used first: none in the batch,
    none holding nothing, never ``exclude`` (the agent room is made for). A queued
    request's agent may go: its turn restores the context when it starts."""
    idle = [a for a in agents if a.agent_id not in running and a.agent_id != exclude and a.num_blocks()]
    return sorted(idle, key=lambda a: last_used.get(a.agent_id, 0.0))
