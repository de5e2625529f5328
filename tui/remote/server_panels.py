"""The app's side of a server: the connection in the header, and panels that say what the server shows.

A mixin of ``BlockpoolApp``, placed before ``PanelFeed`` so that its ``_draw_panels``
runs the usual drawing first. With ``blockpool serve`` the usual drawing is right (the
server's real pool and telemetry arrive as engine stats); with any other server the
block map and gather panels say what it does not expose, and the engine panel shows the
figures of its ``/metrics``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from tui.messages import EngineReady
from tui.remote.messages import ServerStatus
from tui.remote.metrics_view import ServerFigures, figure_rows, missing
from tui.settings import TuiSettings
from tui.widgets import BlockMapPanel, EnginePanel, LatencyPanel

if TYPE_CHECKING:
    from textual.app import App
    from textual.screen import Screen

    _AppBase = App[None]
else:
    _AppBase = object

STATE_STYLES = {"connecting": "yellow", "connected": "green", "unreachable": "red", "refused": "red"}


class ServerPanels(_AppBase):
    settings: TuiSettings
    server_status: ServerStatus | None

    if TYPE_CHECKING:  # provided by BlockpoolApp and PanelFeed
        main_screen: Screen

        def refresh_panels(self) -> None: ...

    def on_server_status(self, message: ServerStatus) -> None:
        self.server_status = message
        self._show_connection()
        self.refresh_panels()

    def on_engine_ready(self, message: EngineReady) -> None:
        self._show_connection()  # after the engine link's title

    def _show_connection(self) -> None:
        if (status := self.server_status) is not None:
            model = self.settings.model or status.model or "the server’s model"
            self.sub_title = f"{model} · {status.text}"

    def _draw_panels(self) -> None:
        super()._draw_panels()  # type: ignore[misc]
        status = self.server_status
        if status is None:
            return
        screen = self.main_screen
        if status.has_pool:
            if status.state != "connected":  # the map would be stale: the pool comes back with the connection
                screen.query_one(BlockMapPanel).show_note(Text(f"{status.text}\nthe server's pool shows again "
                                                               "once it is back", style="yellow"))
            return
        screen.query_one(EnginePanel).border_title = "Server"
        figures = status.figures
        screen.query_one(BlockMapPanel).show_note(_pool_note(figures))
        screen.query_one(LatencyPanel).show_note(_latency_note(figures))
        state = ("server", status.state)
        screen.query_one(EnginePanel).show_rows((state, *figure_rows(figures or ServerFigures())))


def _pool_note(figures: ServerFigures | None) -> Text:
    text = Text("this server exposes no block map", style="bold")
    if figures is None:
        text.append("\nand no /metrics: no KV cache, queue or latency figures", style="dim")
        return text
    if figures.kv_usage is not None:
        text.append(f"\nKV cache {100 * figures.kv_usage:.0f}% used", style="")
    if gaps := missing(figures):
        text.append(f"\nits /metrics has no {', '.join(gaps)}", style="dim")
    return text


def _latency_note(figures: ServerFigures | None) -> Text:
    text = Text("this server exposes no gather timings", style="dim")
    if figures is not None and figures.ttft_mean_s is not None:
        text.append(f"\ntime to first token: {1000 * figures.ttft_mean_s:.0f} ms mean")
    return text
