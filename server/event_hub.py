"""Fans telemetry events from the engine thread out to every ``/v1/events`` listener.

The engine thread hands over a whole step's events in one ``call_soon_threadsafe``;
each listener has a bounded queue, and a listener too slow to keep up loses its
oldest events rather than growing the server's memory.
"""

from __future__ import annotations

import asyncio

from telemetry import Event


class EventHub:
    def __init__(self, *, backlog: int = 4096) -> None:
        self.backlog = backlog
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the server starts
        self._listeners: set[asyncio.Queue[Event]] = set()
        self.dropped = 0

    def from_engine(self, events: list[Event]) -> None:
        """Engine thread: pass one step's events to the event loop (nothing when no one listens)."""
        loop = self.loop
        if loop is None or not self._listeners:
            return
        try:
            loop.call_soon_threadsafe(self._fan_out, events)
        except RuntimeError:  # the loop closed during shutdown
            pass

    def listen(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self.backlog)
        self._listeners.add(queue)
        return queue

    def leave(self, queue: asyncio.Queue[Event]) -> None:
        self._listeners.discard(queue)

    def _fan_out(self, events: list[Event]) -> None:
        for queue in self._listeners:
            for event in events:
                if queue.full():
                    queue.get_nowait()
                    self.dropped += 1
                queue.put_nowait(event)
