"""The engine's one owner thread: the thread that steps it.

The engine's bookkeeping (agents, queues, residency, the generator) changes only on
that thread, under the engine's step lock. Other threads talk to it through the inbox
(``submit``, ``cancel``, ``close_agent``, ``adopt``), read copies taken under that
lock (``agent_blocks``, ``spilled_agents``), and get ``WrongThread`` for what changes
state and needs an answer now (``evict``, ``close``). Ownership passes on when the owner thread ends,
so a test can step on a worker thread and inspect on the main thread afterwards. The front
ends' owner thread is ``engine.owner_thread.EngineOwner``.
"""

from __future__ import annotations

import threading

from pool import AgentBlocks


class WrongThread(RuntimeError):
    """A call that must run on the engine's owner thread came from another one."""


class Owner:
    def __init__(self) -> None:
        self._thread: threading.Thread | None = None

    def claim(self) -> None:
        """Called by ``step_once``: the calling thread owns the engine from now on."""
        me = threading.current_thread()
        if self._thread is not me:
            self.check("step_once")
            self._thread = me

    def is_mine(self) -> bool:
        """True on the owner thread, or when no live thread owns the engine yet."""
        owner = self._thread
        return owner is None or owner is threading.current_thread() or not owner.is_alive()

    def check(self, call: str) -> None:
        if not self.is_mine():
            assert self._thread is not None
            raise WrongThread(
                f"{call}() was called on thread {threading.current_thread().name!r}, but thread "
                f"{self._thread.name!r} steps this engine and owns its state; call it there (between "
                "step_once calls), or use submit/cancel/close_agent/adopt, which are safe from any thread"
            )


def copy_of(agent: AgentBlocks) -> AgentBlocks:
    """A copy of an agent's bookkeeping (same Block objects, own lists) for another thread to read."""
    blocks = {layer_id: list(layer) for layer_id, layer in agent.blocks.items()}
    return AgentBlocks(agent.agent_id, agent.total_tokens, list(agent.token_ids), blocks, agent.cache_salt)
