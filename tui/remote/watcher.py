"""Keeps an eye on the server: connects, follows its pool or metrics, and reconnects with backoff.

With ``blockpool serve`` it follows ``/v1/events`` (the events go to the owner thread,
which mirrors the pool and feeds the telemetry panels); with any other server it scrapes
``/metrics`` every ``refresh_s``. Every change of state is posted as a ``ServerStatus``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from telemetry import Event
from tui.remote.client import ServerClient
from tui.remote.errors import ServerError
from tui.remote.messages import ServerStatus
from tui.remote.metrics_view import read_figures

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0


def retry_delay_s(attempt: int) -> float:
    """0.5, 1, 2, 4, 8, 10, 10… seconds before reconnect attempt ``attempt`` (1-based)."""
    return min(FIRST_RETRY_S * 2 ** (attempt - 1), MAX_RETRY_S)


class ServerWatcher:
    """Runs on the remote engine's event loop; ``run`` never returns until cancelled."""

    def __init__(self, client: ServerClient, *, post: Callable[[ServerStatus], object],
                 on_event: Callable[[Event], None], refresh_s: float) -> None:
        self.client = client
        self._post = post
        self._on_event = on_event
        self.refresh_s = refresh_s
        self.served_models: list[str] | None = None  # None until the first connection
        self.has_pool = False
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Try to reconnect now (a reply found the server gone); call on the event loop."""
        self._wake.set()

    async def run(self) -> None:
        attempt = 0
        self._status("connecting", f"connecting to {self.client.url}…")
        while True:
            try:
                await self.connect()
                attempt = 0
                await self._follow()
            except ServerError as exc:
                attempt += 1
                await self._wait_after(exc, attempt)

    async def connect(self) -> None:
        """Learn the served models and whether this is blockpool serve (raises ServerError)."""
        try:
            self.served_models = await self.client.models()
        except ServerError as exc:
            if exc.unreachable or exc.status == 401:
                raise
            self.served_models = []  # a broken model list (mlx_lm.server without a hub cache) still chats
        self.has_pool = await self.client.has_pool()

    async def _follow(self) -> None:
        """Until the server goes away (raises ServerError)."""
        if self.has_pool:
            self._status("connected", f"connected · blockpool serve at {self.client.url}", has_pool=True)
            async for event in self.client.events():
                self._on_event(event)
            raise ServerError(f"{self.client.url} closed its event stream", unreachable=True)
        while True:
            text = await self.client.metrics()
            try:
                figures = read_figures(text) if text is not None else None
            except ValueError:
                figures = None
            where = "figures from /metrics" if figures is not None else "no /metrics"
            self._status("connected", f"connected · {self.client.url} ({where})", figures=figures)
            await asyncio.sleep(self.refresh_s)
            await self.connect()  # still there, and the key still good?

    async def _wait_after(self, exc: ServerError, attempt: int) -> None:
        delay_s = retry_delay_s(attempt)
        if exc.status == 401:
            self._status("refused", f"the server refused the API key (401): fix --api-key · retrying in "
                                    f"{delay_s:.0f} s", has_pool=self.has_pool)
        else:
            self._status("unreachable", f"server unreachable: reconnecting in {delay_s:.1f} s (attempt {attempt})",
                         has_pool=self.has_pool)
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), delay_s)
        except TimeoutError:
            pass

    @property
    def model(self) -> str | None:
        """The model a request without one gets: blockpool serve's only one (it wants it named)."""
        models = self.served_models or []
        return models[0] if self.has_pool and models else None

    def _status(self, state: str, text: str, **fields: object) -> None:
        self._post(ServerStatus(self.client.url, state, text, model=self.model, **fields))  # type: ignore[arg-type]
