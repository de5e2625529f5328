"""The ``blockpool`` command (``cli``, its subcommands in ``commands``; ``python -m blockpool``):
EXP-005/006 and the demo (``lab``), the benchmarks, ``export``, ``doctor`` and ``serve``.

The top of the dependency graph: pool <- engine <- frontend <- tui, server <- blockpool.
"""
