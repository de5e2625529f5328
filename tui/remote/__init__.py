"""The TUI on an OpenAI-compatible server (``blockpool-tui --server URL``).

``RemoteEngine`` stands where the local engine stands: the worker thread owns it and
calls ``submit`` / ``step_once`` / ``cancel`` as it would the local engine, while an
asyncio loop of its own streams the replies, reads the server's pool and metrics, and
reconnects with backoff. Nothing here touches a widget.
"""

from __future__ import annotations

from tui.remote.factory import remote_engine_factory
from tui.remote.remote_engine import RemoteEngine

__all__ = ["RemoteEngine", "remote_engine_factory"]
