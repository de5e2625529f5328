"""The TUI on an OpenAI-compatible server (``blockpool-tui --server URL``).

``RemoteEngine`` (``tui.remote.remote_engine``) stands where the local engine stands:
the worker thread owns it and calls ``submit`` / ``step_once`` / ``cancel`` as it would
the local engine, while an asyncio loop of its own streams the replies, reads the
server's pool and metrics, and reconnects with backoff. Nothing here touches a widget.
Nothing is imported here: the app imports only the factory, messages and panels, so
that importing it loads neither httpx nor MLX (the pool's types come with the engine).
"""
