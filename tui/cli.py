"""Command line of blockpool-tui: argparse in front of ``TuiSettings``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from engine.config_file import SettingsError, settings_from_args
from tui.settings import CONFIG_ENV, TuiSettings, config_path

OPTION_NAMES = {"refresh_s": "--refresh"}  # settings whose option is not their name with dashes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blockpool-tui",
        description=(
            "Chat with several agents at once over one paged KV cache and watch the block pool live. "
            "Every option can also come from BLOCKPOOL_<NAME> environment variables or from "
            f"{config_path()} (override with ${CONFIG_ENV}); the command line wins."
        ),
    )
    parser.add_argument("--model", metavar="NAME",
                        help="model: a .gguf file, an mlx-lm directory or hub id, or 'gemma3-270m' "
                             "(default: the embedded SmolLM2-135M-Instruct)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--blocks", metavar="N", type=int, help="KV pool size in blocks (one layer, block_tokens tokens)")
    size.add_argument("--kv-memory", metavar="SIZE", help="KV pool size as memory, e.g. 512MiB or 2GB (default 512MiB)")
    parser.add_argument("--kv-bits", type=int, choices=(16, 8, 4),
                        help="K/V at rest in blocks: 16 = the model's floats (default), 8 or 4 = quantized")
    parser.add_argument("--max-tokens", metavar="N", type=int, help="tokens per reply at most (default 256)")
    parser.add_argument("--agents", metavar="N", type=int, help="agents open at start (default 2)")
    parser.add_argument("--system", metavar="TEXT", help="system prompt of new agents")
    parser.add_argument("--temperature", metavar="T", type=float, help="sampling temperature, 0 = greedy (default 0)")
    parser.add_argument("--refresh", metavar="S", type=float, dest="refresh_s",
                        help="seconds between redraws of the side panels (default 0.25; F3 changes it live)")
    parser.add_argument("--telemetry-log", metavar="FILE", type=Path, help="append telemetry events (JSONL) to FILE")
    session = parser.add_mutually_exclusive_group()
    session.add_argument("--resume", action="store_const", const=True, dest="resume",
                         help="resume the last session (default: when it ran the same model)")
    session.add_argument("--new", action="store_const", const=False, dest="resume", help="start a new session")
    parser.add_argument("--data-dir", metavar="DIR", type=Path,
                        help="folder of the session database and spill files (overrides BLOCKPOOL_DATA_DIR)")
    remote = parser.add_argument_group("on a server (instead of the embedded engine)")
    remote.add_argument("--server", metavar="URL",
                        help="chat through this OpenAI-compatible server, e.g. http://127.0.0.1:8000 from "
                             "`blockpool serve`, or vLLM, mlx_lm.server, llama.cpp's server; --model then names "
                             "the served model (default: the server's)")
    remote.add_argument("--api-key", metavar="KEY", help="the server's API key (or BLOCKPOOL_API_KEY)")
    parser.add_argument("--spill-budget", metavar="SIZE",
                        help="disk space for this session's saved KV caches, e.g. 2GiB (the default); "
                             "the least recently used go first")
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> TuiSettings:
    """Settings from ``argv`` plus environment and config file; raises SettingsError."""
    return settings_from_args(TuiSettings, vars(build_parser().parse_args(argv)), option_names=OPTION_NAMES)
