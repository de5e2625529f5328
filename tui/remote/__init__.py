"""The TUI on an OpenAI-compatible server (``blockpool-tui --server URL``).

``RemoteEngine`` (``tui.remote.remote_engine``) implements ``engine.protocol.Engine``: the
owner thread drives it as it drives the local engine, while an asyncio loop of its own streams
the replies, reads the server's pool (``PoolMirror``, a ``PoolSource``) and metrics, and
reconnects with backoff. Nothing here touches a widget; ``server_panels`` says what the side
panels show of a server. Nothing is imported here: the app imports only the factory, messages
and panels, so that importing it loads neither httpx nor MLX.
"""
