"""What the front ends (``blockpool-tui``, ``blockpool serve``, the ``blockpool`` command) share,
above the engine and below them: one settings model per front end feeding the command line,
the environment and the config file (``settings``, ``options``), and the TUI's session store
(``sessions``: agents and transcripts in SQLite, read by ``blockpool export`` too).

Nothing here imports MLX.
"""
