"""The one message the engine's owner thread posts to the app: ``EngineEvent``, carrying one of
``engine.owner_messages``' events (plain values and immutable snapshots, never engine objects).

A stale event of a high-rate kind (``replaceable``: stats, loading progress) still waiting in
the queue is dropped for the newer one (toolong's ``can_replace``).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from engine.owner_messages import OwnerEvent


@dataclass
class EngineEvent(Message):
    """``event`` happened in the engine (posted from the owner thread: ``post_message`` is thread-safe)."""

    event: OwnerEvent

    def can_replace(self, message: Message) -> bool:
        return (isinstance(message, EngineEvent) and type(message.event) is type(self.event)
                and self.event.replaceable)
