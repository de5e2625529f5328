"""Command line of ``blockpool serve``: argparse in front of ``ServeSettings``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine.config_file import CONFIG_ENV, SettingsError, config_path, settings_from_args

from .settings import CONFIG_TABLE, ServeSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blockpool serve",
        description=(
            "Serve the engine over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, "
            "/v1/models), with /metrics, /v1/pool and /v1/events. Every option also comes from "
            f"BLOCKPOOL_SERVE_<NAME> environment variables or the [{CONFIG_TABLE}] table of {config_path()} "
            f"(override with ${CONFIG_ENV}); the command line wins."
        ),
    )
    parser.add_argument("--model", metavar="NAME",
                        help="a .gguf file, an mlx-lm directory or hub id, or 'gemma3-270m' "
                             "(default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; any other needs --api-key)")
    parser.add_argument("--port", type=int, help="TCP port (default 8000)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--blocks", metavar="N", type=int, help="KV pool size in blocks")
    size.add_argument("--kv-memory", metavar="SIZE", help="KV pool size as memory, e.g. 512MiB (default)")
    parser.add_argument("--kv-bits", type=int, choices=(16, 8, 4),
                        help="K/V at rest in blocks: 16 (the model's floats, default), 8 or 4 bits (quantized)")
    parser.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' (8+ characters)")
    parser.add_argument("--max-queue", metavar="N", type=int,
                        help="requests waiting beyond the batch before answering 429 (default 64)")
    parser.add_argument("--max-batch", metavar="N", type=int, help="requests decoded together (default 8)")
    parser.add_argument("--max-tokens-limit", metavar="N", type=int,
                        help="largest max_tokens a request may ask for (default 4096)")
    parser.add_argument("--default-max-tokens", metavar="N", type=int,
                        help="max_tokens of requests that do not say (default 512)")
    parser.add_argument("--max-body-bytes", metavar="SIZE", help="largest request body, e.g. 4MiB (default)")
    parser.add_argument("--max-conversations", metavar="N", type=int,
                        help="idle conversations kept in blocks for reuse (default 64)")
    parser.add_argument("--served-model-name", metavar="ID", help="the model id clients send (default: --model)")
    return parser


def parse_settings(argv: Sequence[str]) -> ServeSettings:
    return settings_from_args(ServeSettings, vars(build_parser().parse_args(list(argv))))


def main(argv: Sequence[str]) -> int:
    """``blockpool serve ARGS``; returns the exit code."""
    from .main import ServeError, serve  # uvicorn, MLX: only once the settings are good

    try:
        settings = parse_settings(argv)
        return serve(settings)
    except (SettingsError, ServeError) as exc:
        print(f"blockpool serve: error: {exc}", file=sys.stderr)
        return 2
