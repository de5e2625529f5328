"""The settings every front end that builds an engine shares: the model, the pool, the config file.

Sources, strongest first: the command line (``frontend.options`` builds it from the model's
fields), the environment (each model's ``env_prefix``: ``BLOCKPOOL_`` for the TUI,
``BLOCKPOOL_SERVE_`` for the server), the config file, the defaults. The config file is TOML
at ``$BLOCKPOOL_CONFIG``, else ``$XDG_CONFIG_HOME/blockpool/config.toml``
(``~/.config/blockpool/config.toml``); a model reads its ``[CONFIG_TABLE]`` table, or the top level.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

from frontend.options import Option, build_parser, explain
from engine import env
from engine.env import CONFIG as CONFIG_ENV
from engine.factory import DEFAULT_KV_MEMORY_BYTES, EngineConfig
from engine.loading.paths import DEFAULT_MODEL_NAME

S = TypeVar("S", bound=BaseSettings)
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
    if (explicit := env.path(CONFIG_ENV)) is not None:
        return explicit
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "blockpool" / "config.toml"


def _int_from_text(value: object) -> object:
    """Environment variables and TOML strings arrive as text; Literal[16, 8, 4] wants the number."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


# A size in bytes, given as a number or as text such as 512MiB.
Size = BeforeValidator(parse_size)
# How blocks hold K/V: 16 (the model's floats), 8 or 4 bits (quantized at rest).
KvBits = Annotated[Literal[16, 8, 4], BeforeValidator(_int_from_text)]


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

    A field's ``description`` is its ``--help`` text too; its ``Option`` says how the
    command line spells it (see ``frontend.options``)."""

    CONFIG_TABLE: ClassVar[str | None] = None

    model: Annotated[str | None, Option(metavar="NAME")] = Field(
        None, description="model: a .gguf file, an mlx-lm directory or hub id, or 'gemma3-270m' "
                          f"(default: the embedded {DEFAULT_MODEL_NAME})")
    blocks: Annotated[int | None, Option(metavar="N", exclusive="pool size")] = Field(
        None, gt=0, description="KV pool size in blocks (one layer, block_tokens tokens each)")
    kv_memory: Annotated[int | None, Size, Option(metavar="SIZE", exclusive="pool size")] = Field(
        None, gt=0, description="KV pool size as memory, e.g. 512MiB or 2GB (default 512MiB)")
    kv_bits: Annotated[KvBits, Option(choices=(16, 8, 4))] = Field(
        16, description="K/V at rest in blocks: 16 = the model's floats (default), 8 or 4 = quantized "
                        "(more contexts in the same memory)")
    hot_cache: Annotated[int | None, Size, Option(metavar="SIZE")] = Field(
        None, ge=0, description="memory for idle agents' contexts kept ready as mlx-lm caches, so a "
                                "warm turn copies nothing, e.g. 256MiB; 0 = gather every turn from "
                                "blocks (default: the pool's size as floats, at most 1/4 of RAM)")

    @model_validator(mode="after")
    def _one_pool_size(self) -> EngineSettings:
        if self.blocks is not None and self.kv_memory is not None:
            raise ValueError(
                f"give the pool size once: blocks={self.blocks} or kv_memory={self.kv_memory} bytes, not both")
        return self

    @property
    def kv_memory_bytes(self) -> int:
        return self.kv_memory if self.kv_memory is not None else DEFAULT_KV_MEMORY_BYTES

    @property
    def model_name(self) -> str:
        """The model as the front ends name it: ``--model``, else the embedded default's name."""
        return self.model or DEFAULT_MODEL_NAME

    def engine_config(self, **overrides: Any) -> EngineConfig:
        """The engine these settings describe (``overrides``: what only the front end knows)."""
        return EngineConfig(model=self.model, blocks=self.blocks, kv_memory_bytes=self.kv_memory_bytes,
                            kv_bits=self.kv_bits, hot_cache_bytes=self.hot_cache, **overrides)

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


class SettingsError(ValueError):
    """Settings that cannot run; a front end's main() prints it and exits with status 2."""


def settings_from_args(settings_cls: type[S], args: Mapping[str, object]) -> S:
    """Settings from parsed command-line ``args`` over environment and config file; raises SettingsError."""
    given = {name: value for name, value in args.items() if value is not None}
    # A pool size on the command line replaces any size from env or file.
    if args.get("blocks") is not None:
        given["kv_memory"] = None
    elif args.get("kv_memory") is not None:
        given["blocks"] = None
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        raise SettingsError(explain(exc, settings_cls)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {config_path()} is not valid TOML: {exc}") from exc


def parse_settings(settings_cls: type[S], argv: Sequence[str] | None, *, prog: str, description: str) -> S:
    """``argv`` read by the parser built from ``settings_cls``, over environment and config file.

    Raises SettingsError; argparse exits with status 2 on its own errors (an unknown option, a bad int)."""
    parser = build_parser(settings_cls, prog=prog, description=description)
    return settings_from_args(settings_cls, vars(parser.parse_args(argv)))
