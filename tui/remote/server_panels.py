"""What the side panels say of a server (``--server``), and the header's connection.

With ``blockpool serve`` the usual drawing is right (the server's real pool and telemetry
arrive as engine stats); with any other server the block map and gather panels say what it
does not expose, and the engine panel shows the figures of its ``/metrics``.
"""

from __future__ import annotations

from rich.text import Text
from textual.screen import Screen

from tui.remote.messages import ServerStatus
from tui.remote.metrics_view import ServerFigures, figure_rows, missing
from tui.widgets import BlockMapPanel, EnginePanel, LatencyPanel



def connection_title(model: str | None, status: ServerStatus) -> str:
    """The header after the title: the model and the connection's state."""
    return f"{model or status.model or 'the server’s model'} · {status.text}"


def draw_server_panels(screen: Screen, status: ServerStatus) -> None:
    """After the usual drawing: what this server shows, or says it does not."""
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
