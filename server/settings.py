"""blockpool serve settings: command line > environment (BLOCKPOOL_SERVE_*) > config file > defaults.

The config file is the TUI's (``$BLOCKPOOL_CONFIG`` or ``~/.config/blockpool/config.toml``);
the server reads its ``[serve]`` table, e.g. ``port = 8100``.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import SettingsConfigDict

# The model, the pool, sizes and the config file, as the TUI reads them.
from engine.config_file import EngineSettings, parse_size

CONFIG_TABLE = "serve"


class ServeSettings(EngineSettings):
    """Everything ``blockpool serve`` can be told; see ``blockpool serve --help``."""

    model_config = SettingsConfigDict(env_prefix="BLOCKPOOL_SERVE_", extra="ignore", validate_default=True)
    CONFIG_TABLE: ClassVar[str | None] = CONFIG_TABLE

    host: str = Field("127.0.0.1", min_length=1, description="address to bind (non-loopback needs an API key)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    api_key: str | None = Field(None, min_length=8, description="clients must send 'Authorization: Bearer KEY'")
    max_queue: int = Field(64, ge=0, description="requests waiting beyond the running batch before 429")
    max_batch: int = Field(8, ge=1, le=256, description="requests decoded together")
    default_max_tokens: int = Field(512, gt=0, description="tokens per reply when a request does not say")
    max_tokens_limit: int = Field(4096, gt=0, description="largest max_tokens a request may ask for")
    max_body_bytes: Annotated[int, BeforeValidator(parse_size)] = Field(
        4 * 2**20, gt=0, description="largest request body")
    max_conversations: int = Field(64, ge=0, description="idle conversations kept in blocks for reuse (LRU)")
    served_model_name: str | None = Field(None, description="the model id clients send (default: from --model)")

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if not is_loopback(self.host) and self.api_key is None:
            raise ValueError(
                f"host {self.host!r} is reachable from other machines; set an API key (--api-key or "
                "BLOCKPOOL_SERVE_API_KEY) or bind 127.0.0.1")
        return self



def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost': addresses only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
