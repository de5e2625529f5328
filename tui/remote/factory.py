"""Builds the remote engine from settings, on the engine thread (like ``tui.engine_factory``)."""

from __future__ import annotations

from telemetry import Recorder
from tui.messages import Post
from tui.settings import TuiSettings
from tui.worker import Engine, EngineFactory, Progress

# The server's pool or metrics are read at most this often (the panels redraw from them).
SCRAPE_INTERVAL_S = 1.0


def remote_engine_factory(settings: TuiSettings, post: Post) -> EngineFactory:
    """A factory for ``settings.server``; ``post`` takes the connection's ``ServerStatus`` messages."""
    assert settings.server is not None

    def build(progress: Progress, recorder: Recorder) -> Engine:
        from tui.remote.remote_engine import RemoteEngine  # httpx only when a server is used

        progress(f"connecting to {settings.server}…", 0.5)
        return RemoteEngine(settings.server, api_key=settings.api_key, model=settings.model, recorder=recorder,
                            post=post, refresh_s=max(settings.refresh_s, SCRAPE_INTERVAL_S))

    return build
