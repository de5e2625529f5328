"""Settings shared by every blockpool front end (the TUI and the server): the config file and sizes.

The config file is TOML at ``$BLOCKPOOL_CONFIG``, else
``$XDG_CONFIG_HOME/blockpool/config.toml`` (``~/.config/blockpool/config.toml``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ValidationError

S = TypeVar("S", bound=BaseModel)

CONFIG_ENV = "BLOCKPOOL_CONFIG"
DEFAULT_KV_MEMORY_BYTES = 512 * 2**20
DEFAULT_SPILL_BUDGET_BYTES = 2 * 2**30
_UNITS = {
    "": 1, "b": 1,
    "k": 2**10, "kib": 2**10, "kb": 10**3,
    "m": 2**20, "mib": 2**20, "mb": 10**6,
    "g": 2**30, "gib": 2**30, "gb": 10**9,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_size(value: object) -> object:
    """'512MiB', '2GB', '1.5g' or a plain byte count -> bytes (KiB/MiB/GiB and K/M/G are binary)."""
    if not isinstance(value, str):
        return value
    match = _SIZE.match(value.lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"{value!r} is not a size; write e.g. 512MiB, 2GB or 1048576 (bytes)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def config_path() -> Path:
    if explicit := os.environ.get(CONFIG_ENV):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "blockpool" / "config.toml"


def _int_from_text(value: object) -> object:
    """Environment variables and TOML strings arrive as text; Literal[16, 8, 4] wants the number."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


# How blocks hold K/V: 16 (the model's floats), 8 or 4 bits (quantized at rest).
KvBits = Annotated[Literal[16, 8, 4], BeforeValidator(_int_from_text)]


class SettingsError(ValueError):
    """Settings that cannot run; a front end's main() prints it and exits with status 2."""


def settings_from_args(settings_cls: type[S], args: dict[str, object], *,
                       option_names: Mapping[str, str] | None = None) -> S:
    """Settings from parsed command-line ``args`` over environment and config file; raises SettingsError.

    ``option_names``: settings whose option is not their name with dashes (``refresh_s`` -> ``--refresh``).
    """
    given = {name: value for name, value in args.items() if value is not None}
    # A pool size on the command line replaces any size from env or file.
    if args.get("blocks") is not None:
        given["kv_memory"] = None
    elif args.get("kv_memory") is not None:
        given["blocks"] = None
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, option_names or {})) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {config_path()} is not valid TOML: {exc}") from exc


def _explain(exc: ValidationError, option_names: Mapping[str, str]) -> str:
    """One line naming each bad option, what is wrong, and the value given."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        option = option_names.get(where, f"--{where.replace('_', '-')}") if where else "settings"
        got = f" (got {error['input']!r})" if where else ""
        lines.append(f"{option}: {error['msg'].removeprefix('Value error, ')}{got}")
    return "; ".join(lines)
