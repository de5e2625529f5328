"""Command line of ``blockpool serve``: the parser ``ServeSettings`` describes."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from frontend.settings import CONFIG_ENV, SettingsError, config_path
from frontend.settings import parse_settings as parse
from engine.env import SERVE_PREFIX

from .settings import CONFIG_TABLE, ServeSettings

def description() -> str:
    return ("Serve the engine over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, "
            "/v1/models), with /metrics, /v1/pool and /v1/events. Every option also comes from "
            f"{SERVE_PREFIX}<NAME> environment variables or the [{CONFIG_TABLE}] table of {config_path()} "
            f"(override with ${CONFIG_ENV}); the command line wins.")


def parse_settings(argv: Sequence[str]) -> ServeSettings:
    """Settings from ``argv`` plus environment and config file; raises SettingsError."""
    return parse(ServeSettings, list(argv), prog="blockpool serve", description=description())


def main(argv: Sequence[str]) -> int:
    """``blockpool serve ARGS``; returns the exit code."""
    from .main import ServeError, serve  # uvicorn, MLX: only once the settings are good

    try:
        settings = parse_settings(argv)
        return serve(settings)
    except (SettingsError, ServeError) as exc:
        print(f"blockpool serve: error: {exc}", file=sys.stderr)
        return 2
