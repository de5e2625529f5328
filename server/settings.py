"""blockpool serve settings: command line > environment (BLOCKPOOL_SERVE_*) > config file > defaults.

The config file is the TUI's (``$BLOCKPOOL_CONFIG`` or ``~/.config/blockpool/config.toml``);
the server reads its ``[serve]`` table, e.g. ``port = 8100``. Each field's description is
its ``blockpool serve --help`` text (``frontend.options``).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from frontend.options import Option
from frontend.settings import EngineSettings, Size
from engine.env import SERVE_PREFIX

CONFIG_TABLE = "serve"


class ServeSettings(EngineSettings):
    """Everything ``blockpool serve`` can be told; see ``blockpool serve --help``."""

    model_config = SettingsConfigDict(env_prefix=SERVE_PREFIX, extra="ignore", validate_default=True)
    CONFIG_TABLE: ClassVar[str | None] = CONFIG_TABLE

    host: str = Field("127.0.0.1", min_length=1,
                      description="address to bind (default 127.0.0.1; any other needs --api-key)")
    port: Annotated[int, Option(metavar="PORT")] = Field(8000, ge=0, le=65535,
                                                          description="TCP port (default 8000; 0 picks a free one)")
    api_key: Annotated[SecretStr | None, Option(metavar="KEY")] = Field(  # SecretStr: never in a repr
        None, description="require 'Authorization: Bearer KEY' (8+ characters)")
    max_queue: Annotated[int, Option(metavar="N")] = Field(
        64, ge=0, description="requests waiting beyond the batch before answering 429 (default 64)")
    max_batch: Annotated[int, Option(metavar="N")] = Field(8, ge=1, le=256,
                                                           description="requests decoded together (default 8)")
    default_max_tokens: Annotated[int, Option(metavar="N")] = Field(
        512, gt=0, description="max_tokens of requests that do not say (default 512)")
    max_tokens_limit: Annotated[int, Option(metavar="N")] = Field(
        4096, gt=0, description="largest max_tokens a request may ask for (default 4096)")
    max_body_bytes: Annotated[int, Size, Option(metavar="SIZE")] = Field(
        4 * 2**20, gt=0, description="largest request body, e.g. 4MiB (default)")
    max_conversations: Annotated[int, Option(metavar="N")] = Field(
        64, ge=0, description="idle conversations kept in blocks for reuse, least recently used closed first "
                              "(default 64)")
    served_model_name: Annotated[str | None, Option(metavar="ID")] = Field(
        None, description="the model id clients send (default: from --model)")
    allowed_host: Annotated[str | None, Option(metavar="HOST[,HOST]")] = Field(
        None, description="without --api-key, Host names accepted besides localhost, 127.0.0.1, [::1] and --host "
                          "(comma-separated); others get 403 (DNS rebinding)")
    request_timeout_s: Annotated[float, Option(metavar="S")] = Field(
        600.0, gt=0, description="a request still unfinished after S seconds is cancelled: 504, or an error "
                                 "event in a stream (default 600)")
    keep_alive_s: Annotated[float, Option(metavar="S")] = Field(
        10.0, gt=0, description="a stream with no new tokens for S seconds gets an SSE ': keep-alive' comment "
                                "(default 10)")
    timeout_keep_alive_s: Annotated[float, Option(metavar="S")] = Field(
        5.0, gt=0, description="idle keep-alive connections are closed after S seconds (uvicorn, default 5)")
    max_incomplete_event_bytes: Annotated[int, Size, Option(metavar="SIZE")] = Field(
        64 * 2**10, gt=0, description="largest request line plus headers (h11; default 64KiB)")
    limit_concurrency: Annotated[int, Option(metavar="N")] = Field(
        256, ge=1, description="open connections (idle or not) beyond which uvicorn answers 503 (default 256)")

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value()) < 8:
            raise ValueError("String should have at least 8 characters")  # the message never shows the key
        return key

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if not is_loopback(self.host) and self.api_key is None:
            raise ValueError(
                f"host {self.host!r} is reachable from other machines; set an API key (--api-key or "
                f"{SERVE_PREFIX}API_KEY) or bind 127.0.0.1")
        return self

    def host_names(self) -> frozenset[str]:
        """The Host header names accepted without an API key (lower case, no port, IPv6 in brackets)."""
        extra = [h.strip().lower() for h in (self.allowed_host or "").split(",") if h.strip()]
        bound = self.host.lower()
        bound = f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound
        return frozenset({"localhost", "127.0.0.1", "[::1]", bound, *extra})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost': addresses only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
