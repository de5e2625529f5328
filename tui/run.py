"""``blockpool-tui``'s entry point: settings from the command line, the session store, the app."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from engine import fastblas
from frontend.sessions import SessionStoreError
from frontend.settings import SettingsError
from tui.app import BlockpoolApp
from tui.cli import parse_settings
from tui.session_log import open_store


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: ``blockpool-tui [options]`` (see ``--help``)."""
    fastblas.reexec_if_needed()  # before anything imports MLX
    try:
        settings = parse_settings(argv)
    except SettingsError as exc:
        print(f"blockpool-tui: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        store, warning = open_store(settings)
        app = BlockpoolApp(settings, store=store)
    except SessionStoreError as exc:
        print(f"blockpool-tui: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if warning is not None:
        print(f"blockpool-tui: warning: {warning}", file=sys.stderr)
        app.startup_warnings.append(warning)
    app.run()
    raise SystemExit(app.return_code or 0)
