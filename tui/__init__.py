"""blockpool-tui: a Textual app for several agent chats over one block-pool KV cache.

``app.BlockpoolApp`` is a thin App composed of parts it owns (``chats``, ``agent_tabs``,
``forks``, ``dialogs``, ``panel_feed``); the engine runs on ``engine.owner_thread``'s thread,
which posts each event as one ``messages.EngineEvent``. ``run.main`` is the console entry point.
Nothing here imports MLX at import time; ``run.main`` re-execs with OpenBLAS preloaded first.
"""
