"""What the remote engine tells the app about its server (posted from its event loop's thread)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from textual.message import Message

from tui.remote.metrics_view import ServerFigures

ConnectionState = Literal["connecting", "connected", "unreachable", "refused"]


@dataclass
class ServerStatus(Message):
    """The connection and what the server exposes.

    ``has_pool``: the server is ``blockpool serve`` (its real pool arrives as engine stats).
    ``figures``: read from its ``/metrics``, or None when it has none.
    """

    url: str
    state: ConnectionState
    text: str
    has_pool: bool = False
    model: str | None = None  # the served model, when the server names one
    figures: ServerFigures | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ServerStatus)


# Posts the connection's state to the app (``App.post_message`` is thread-safe).
PostStatus = Callable[[ServerStatus], object]
