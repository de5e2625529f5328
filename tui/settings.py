"""blockpool-tui settings: command line > environment (BLOCKPOOL_*) > config file > defaults.

The config file is TOML at ``$BLOCKPOOL_CONFIG``, else
``$XDG_CONFIG_HOME/blockpool/config.toml`` (``~/.config/blockpool/config.toml``).
Its ``[keymap]`` table remaps keys by binding id, e.g. ``broadcast = "ctrl+t"``. Each
field's description is its ``blockpool-tui --help`` text (``frontend.options``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from frontend.options import Option
from frontend.settings import DEFAULT_SPILL_BUDGET_BYTES, EngineSettings, Size
from engine.env import DATA_DIR, TUI_PREFIX

SERVER = "on a server (instead of the embedded engine)"  # the help section of --server and --api-key


class TuiSettings(EngineSettings):
    """Everything blockpool-tui can be told; see ``blockpool-tui --help``."""

    model_config = SettingsConfigDict(env_prefix=TUI_PREFIX, extra="ignore", validate_default=True)

    max_tokens: Annotated[int, Option(metavar="N")] = Field(256, gt=0,
                                                            description="tokens per reply at most (default 256)")
    agents: Annotated[int, Option(metavar="N")] = Field(2, ge=0, le=32, description="agents open at start (default 2)")
    system: Annotated[str, Option(metavar="TEXT")] = Field("You are a helpful assistant.",
                                                           description="system prompt of new agents")
    temperature: Annotated[float, Option(metavar="T")] = Field(
        0.0, ge=0.0, le=2.0, description="sampling temperature, 0 = greedy (default 0; at most 2, as OpenAI "
                                         "servers allow)")
    bell: Annotated[bool, Option(switches=(("--bell", True, "ring the terminal bell when a reply ends"),))] = Field(
        False, description="ring the terminal bell when a reply ends (default off)")
    refresh_s: Annotated[float, Option(metavar="S", flag="--refresh")] = Field(
        0.25, ge=0.05, le=10.0, description="seconds between redraws of the side panels (default 0.25; F3 "
                                            "changes it live)")
    telemetry_log: Annotated[Path | None, Option(metavar="FILE")] = Field(
        None, description="append telemetry events (JSONL) to FILE")
    keymap: Annotated[dict[str, str], Option(cli=False)] = Field(default_factory=dict,
                                                                 description="binding id -> keys")
    resume: Annotated[bool | None, Option(exclusive="session", switches=(
        ("--resume", True, "resume the last session (default: when it ran the same model)"),
        ("--new", False, "start a new session")))] = Field(
        None, description="resume the last session (True), start a new one (False), or resume it if it ran "
                          "the same model (None)")
    data_dir: Annotated[Path | None, Option(metavar="DIR")] = Field(
        None, description=f"folder of the session database and spill files (overrides {DATA_DIR})")
    server: Annotated[str | None, Option(metavar="URL", group=SERVER)] = Field(
        None, description="chat through this OpenAI-compatible server, e.g. http://127.0.0.1:8000 from "
                          "`blockpool serve`, or vLLM, mlx_lm.server, llama.cpp's server; --model then names the "
                          "served model (default: the server's)")
    api_key: Annotated[SecretStr | None, Option(metavar="KEY", group=SERVER)] = Field(  # never in a repr
        None, description=f"the server's API key (or {TUI_PREFIX}API_KEY)")
    spill_budget: Annotated[int, Size, Option(metavar="SIZE")] = Field(
        DEFAULT_SPILL_BUDGET_BYTES, ge=0, description="disk space for this session's saved KV caches, e.g. 2GiB "
                                                      "(the default); the least recently used go first")

    @field_validator("server")
    @classmethod
    def _server_url(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")) or url.endswith("/v1"):
            raise ValueError(f"{url!r} is not a server base URL; write e.g. http://127.0.0.1:8000 (without /v1)")
        return url
