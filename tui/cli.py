"""Command line of blockpool-tui: the parser ``TuiSettings`` describes."""

from __future__ import annotations

from collections.abc import Sequence

from frontend.settings import CONFIG_ENV, SettingsError, config_path  # noqa: F401 (SettingsError: for main)
from frontend.settings import parse_settings as parse
from engine.env import TUI_PREFIX
from tui.settings import TuiSettings


def description() -> str:
    return ("Chat with several agents at once over one paged KV cache and watch the block pool live. "
            f"Every option can also come from {TUI_PREFIX}<NAME> environment variables or from "
            f"{config_path()} (override with ${CONFIG_ENV}); the command line wins.")


def parse_settings(argv: Sequence[str] | None = None) -> TuiSettings:
    """Settings from ``argv`` plus environment and config file; raises SettingsError."""
    return parse(TuiSettings, argv, prog="blockpool-tui", description=description())
