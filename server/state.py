"""What every route needs, built once per server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from .client import EngineClient, Sampling
from .errors import APIError
from .event_hub import EventHub
from .schemas import ChatCompletionRequest, CompletionRequest
from .prompts import check_unicode
from .settings import ServeSettings
from .unsupported import refuse_unsupported


@dataclass
class ServeState:
    settings: ServeSettings
    model_id: str
    tokenizer: Any  # used on route threads only to encode prompts (stateless)
    client: EngineClient
    hub: EventHub
    created: int

    def check_model(self, name: str) -> None:
        if name != self.model_id:
            raise APIError(404, f"model {name!r} is not served here; this server serves {self.model_id!r} "
                                "(see GET /v1/models)", param="model", code="model_not_found")

    def sampling(self, body: ChatCompletionRequest | CompletionRequest) -> Sampling:
        """The request's sampling settings with the server's defaults and limits applied."""
        refuse_unsupported(body)
        asked = body.requested_max_tokens()
        limit = self.settings.max_tokens_limit
        if asked is not None and asked > limit:
            param = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
            raise APIError(400, f"{param}={asked} is over this server's limit of {limit}; ask for fewer tokens",
                           param=param, code="max_tokens_too_large")
        stop = body.stop_strings()
        if len(stop) > 4 or any(not s for s in stop):
            raise APIError(400, f"stop takes up to 4 non-empty strings, got {list(stop)!r}", param="stop",
                           code="invalid_stop")
        for stop_string in stop:
            check_unicode(stop_string, "stop")
        if body.cache_salt is not None:
            check_unicode(body.cache_salt, "cache_salt")
        return Sampling(
            max_tokens=min(asked if asked is not None else self.settings.default_max_tokens, limit),
            temperature=body.temperature if body.temperature is not None else 0.0,
            top_p=body.top_p if body.top_p is not None else 1.0,
            stop=stop,
            seed=body.sampler_seed(),
            cache_salt=body.cache_salt,
        )


def serve_state(request: Request) -> ServeState:
    return request.app.state.serve
