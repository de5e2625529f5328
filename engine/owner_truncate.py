"""The owner thread's handler of ``Truncate``: roll an idle agent's context back, say how it went."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .owner_messages import OwnerEvent, Truncate, Truncated, TruncateFailed

if TYPE_CHECKING:
    from .owner_requests import Requests
    from .protocol import Engine

logger = logging.getLogger(__name__)


def truncate(engine: Engine, command: Truncate, requests: Requests, emit: Callable[[OwnerEvent], None]) -> None:
    """A refused rollback (running agent, too few tokens, an engine that cannot) is told, not raised."""
    agent_id, num_tokens = command.agent_id, command.num_tokens
    if engine.truncate is None:
        emit(TruncateFailed(agent_id, num_tokens, "this engine cannot roll a context back"))
        return
    from pool import PoolExhausted  # lazy: importing pool loads MLX, and a front end imports this module first

    try:
        blocks = engine.truncate(agent_id, num_tokens)
    except (ValueError, PoolExhausted) as exc:
        emit(TruncateFailed(agent_id, num_tokens, str(exc)))
        return
    except Exception as exc:  # a bug: its sender hears of it (it starts the context afresh), the engine goes on
        logger.exception("truncating agent %r to %d tokens failed", agent_id, num_tokens)
        emit(TruncateFailed(agent_id, num_tokens, f"{type(exc).__name__}: {exc}"))
        return
    ids = tuple(blocks.token_ids)
    if agent_id in requests.agents:
        requests.agents[agent_id] = ids
    emit(Truncated(agent_id, blocks.total_tokens, blocks.num_blocks(), ids))
