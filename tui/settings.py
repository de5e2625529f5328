"""blockpool-tui settings: command line > environment (BLOCKPOOL_*) > config file > defaults.

The config file is TOML at ``$BLOCKPOOL_CONFIG``, else
``$XDG_CONFIG_HOME/blockpool/config.toml`` (``~/.config/blockpool/config.toml``).
Its ``[keymap]`` table remaps keys by binding id, e.g. ``broadcast = "ctrl+t"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import SettingsConfigDict

from engine.config_file import (  # noqa: F401 (re-exported for the app and its tests)
    CONFIG_ENV,
    DEFAULT_KV_MEMORY_BYTES,
    DEFAULT_SPILL_BUDGET_BYTES,
    EngineSettings,
    KvBits,
    config_path,
    parse_size,
)


class TuiSettings(EngineSettings):
    """Everything blockpool-tui can be told; see ``blockpool-tui --help``."""

    model_config = SettingsConfigDict(env_prefix="BLOCKPOOL_", extra="ignore", validate_default=True)

    max_tokens: int = Field(256, gt=0, description="tokens per reply at most")
    agents: int = Field(2, ge=0, le=32, description="agents open at start")
    system: str = Field("You are a helpful assistant.", description="system prompt of new agents")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="sampling temperature (0 = greedy)")
    refresh_s: float = Field(0.25, ge=0.05, le=10.0, description="seconds between redraws of the side panels "
                                                                  "(at most; changeable live with F3)")
    telemetry_log: Path | None = Field(None, description="append telemetry events to this JSONL file")
    keymap: dict[str, str] = Field(default_factory=dict, description="binding id -> keys")
    resume: bool | None = Field(
        None, description="resume the last session (True), start a new one (False), or resume it if it ran "
                          "the same model (None)")
    data_dir: Path | None = Field(None, description="folder of sessions.db and spill files (default: the "
                                                    "user data folder)")
    server: str | None = Field(None, description="chat through this OpenAI-compatible server (base URL, e.g. "
                                                 "http://127.0.0.1:8000) instead of the embedded engine")
    api_key: str | None = Field(None, description="the server's API key (sent as a Bearer token)")
    spill_budget: Annotated[int, BeforeValidator(parse_size)] = Field(
        DEFAULT_SPILL_BUDGET_BYTES, ge=0, description="disk space for this session's saved caches (default 2GiB); "
                                                      "least recently used go first")

    @field_validator("server")
    @classmethod
    def _server_url(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")) or url.endswith("/v1"):
            raise ValueError(f"{url!r} is not a server base URL; write e.g. http://127.0.0.1:8000 (without /v1)")
        return url
