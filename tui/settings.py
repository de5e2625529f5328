"""blockpool-tui settings: command line > environment (BLOCKPOOL_*) > config file > defaults.

The config file is TOML at ``$BLOCKPOOL_CONFIG``, else
``$XDG_CONFIG_HOME/blockpool/config.toml`` (``~/.config/blockpool/config.toml``).
Its ``[keymap]`` table remaps keys by binding id, e.g. ``broadcast = "ctrl+t"``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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


class TuiSettings(BaseSettings):
    """Everything blockpool-tui can be told; see ``blockpool-tui --help``."""

    model_config = SettingsConfigDict(env_prefix="BLOCKPOOL_", extra="ignore", validate_default=True)

    model: str | None = Field(None, description="model to load (default: the embedded SmolLM2-135M-Instruct)")
    blocks: int | None = Field(None, gt=0, description="KV pool size in blocks")
    kv_memory: Annotated[int | None, BeforeValidator(parse_size)] = Field(
        None, gt=0, description="KV pool size in bytes (default 512MiB)")
    kv_bits: Literal[16, 8, 4] = Field(16, description="K/V at rest in blocks: 16 (the model's floats), 8 or 4 "
                                                       "bits (quantized; more agents in the same memory)")
    max_tokens: int = Field(256, gt=0, description="tokens per reply at most")
    agents: int = Field(2, ge=0, le=32, description="agents open at start")
    system: str = Field("You are a helpful assistant.", description="system prompt of new agents")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="sampling temperature (0 = greedy)")
    telemetry_log: Path | None = Field(None, description="append telemetry events to this JSONL file")
    keymap: dict[str, str] = Field(default_factory=dict, description="binding id -> keys")
    resume: bool | None = Field(
        None, description="resume the last session (True), start a new one (False), or resume it if it ran "
                          "the same model (None)")
    data_dir: Path | None = Field(None, description="folder of sessions.db and spill files (default: the "
                                                    "user data folder)")
    spill_budget: Annotated[int, BeforeValidator(parse_size)] = Field(
        DEFAULT_SPILL_BUDGET_BYTES, ge=0, description="disk space for this session's saved caches (default 2GiB); "
                                                      "least recently used go first")

    @model_validator(mode="after")
    def _one_pool_size(self) -> TuiSettings:
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
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_path())
        return (init_settings, env_settings, toml)
