"""What went wrong with the server, in words a user can act on."""

from __future__ import annotations

import json

import httpx


class ServerError(Exception):
    """A request to the server failed; ``str()`` says what happened and what to do."""

    def __init__(self, message: str, *, status: int | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable  # the server could not be reached: reconnect with backoff


def transport_error(url: str, exc: httpx.TransportError, *, mid_reply: bool = False) -> ServerError:
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if mid_reply:
        return ServerError(f"the server at {url} went away mid-reply ({what}). The partial reply is not kept in "
                           "the conversation and your message is back in the composer: send it again once the "
                           "header says connected", unreachable=True)
    if isinstance(exc, httpx.ConnectError):
        return ServerError(f"cannot reach the server at {url} ({what}). Is it running? Start it (e.g. "
                           "`blockpool serve`) or check --server; your message is back in the composer, send "
                           "it again once the header says connected", unreachable=True)
    return ServerError(f"the request to {url} failed ({what}); your message is back in the composer, send it "
                       "again", unreachable=True)


def status_error(url: str, status: int, body: bytes) -> ServerError:
    detail = _error_message(body)
    if status == 401:
        text = (f"the server at {url} refused the API key (HTTP 401{': ' + detail if detail else ''}). Give the "
                "right one with --api-key or BLOCKPOOL_API_KEY and restart; your message is back in the composer")
    elif status == 404:
        text = (f"the server at {url} answered 404 ({detail or 'not found'}): is it an OpenAI-compatible server, "
                "and is --model one of its models (GET /v1/models)?")
    elif status == 429:
        text = f"the server at {url} is full (HTTP 429: {detail}); send again in a moment"
    else:
        text = f"the server at {url} answered HTTP {status}: {detail or 'no details'}"
    return ServerError(text, status=status)


def _error_message(body: bytes) -> str:
    """The message of an OpenAI-style error body, else the start of the body."""
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body[:200].decode(errors="replace").strip()
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed.get("detail", parsed))
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    return str(parsed)[:200]
