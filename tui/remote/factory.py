"""The TUI's engine factory: the local engine (``engine.factory``), or with ``--server`` the remote one,
built on the owner thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.factory import EngineFactory, Progress, engine_factory
from engine.protocol import Engine
from telemetry import Recorder
from tui.remote.messages import PostStatus
from tui.settings import TuiSettings

# The server's pool or metrics are read at most this often (the panels redraw from them).
SCRAPE_INTERVAL_S = 1.0


def remote_engine_factory(settings: TuiSettings, post: PostStatus) -> EngineFactory:
    """A factory for ``settings.server``; ``post`` takes the connection's ``ServerStatus`` messages."""
    assert settings.server is not None

    def build(progress: Progress, recorder: Recorder) -> Engine:
        from tui.remote.remote_engine import RemoteEngine  # httpx only when a server is used

        progress(f"connecting to {settings.server}…", 0.5)
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        return RemoteEngine(settings.server, api_key=key, model=settings.model, recorder=recorder,
                            post=post, refresh_s=max(settings.refresh_s, SCRAPE_INTERVAL_S))

    return build


def tui_engine_factory(settings: TuiSettings, *, spill_dir: Path | None, loaded_model: tuple[Any, Any] | None,
                       post: PostStatus) -> EngineFactory:
    """``settings.server``'s remote engine, else the local one over ``loaded_model`` (or the model
    ``settings`` names), spilling into ``spill_dir`` within the session's budget."""
    if settings.server is not None:
        return remote_engine_factory(settings, post)
    config = settings.engine_config(spill_dir=spill_dir, spill_budget_bytes=settings.spill_budget if spill_dir else None)
    return engine_factory(config, loaded_model=loaded_model)
