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
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

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


def config_table(name: str | None) -> dict[str, Any]:
    """The config file's top level (``name`` None) or its ``[name]`` table; {} without a file."""
    path = config_path()
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        data = tomllib.load(f)
    table = data if name is None else data.get(name, {})
    if not isinstance(table, dict):
        raise ValueError(f"[{name}] in {path} must be a table, got {table!r}")
    return table


class EngineSettings(BaseSettings):
    """What every front end that builds an engine is told: the model and the pool.

    Sources, strongest first: arguments, the environment (each subclass's ``env_prefix``),
    then the config file: its ``[CONFIG_TABLE]`` table, or its top level when that is None."""

    CONFIG_TABLE: ClassVar[str | None] = None

    model: str | None = Field(None, description="model to load (default: the embedded SmolLM2-135M-Instruct)")
    blocks: int | None = Field(None, gt=0, description="KV pool size in blocks")
    kv_memory: Annotated[int | None, BeforeValidator(parse_size)] = Field(
        None, gt=0, description="KV pool size in bytes (default 512MiB)")
    kv_bits: KvBits = Field(16, description="K/V at rest in blocks: 16 (the model's floats), 8 or 4 "
                                            "bits (quantized; more contexts in the same memory)")

    @model_validator(mode="after")
    def _one_pool_size(self) -> EngineSettings:
        if self.blocks is not None and self.kv_memory is not None:
            raise ValueError(
                f"give the pool size once: blocks={self.blocks} or kv_memory={self.kv_memory} bytes, not both")
        return self

    @property
    def kv_memory_bytes(self) -> int:
        return self.kv_memory if self.kv_memory is not None else DEFAULT_KV_MEMORY_BYTES

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, InitSettingsSource(settings_cls, config_table(cls.CONFIG_TABLE)))
