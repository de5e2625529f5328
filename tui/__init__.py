"""blockpool-tui: a Textual app for several agent chats over one block-pool KV cache.

Nothing here imports MLX at import time; ``tui.app.main`` re-execs with OpenBLAS
preloaded first, and the engine is built on its own thread.
"""
