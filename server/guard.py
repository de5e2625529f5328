"""ASGI middleware in front of every route: API key, Host / Origin names, and request body size.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses and disconnect
notices pass through untouched.
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body

OPEN_PATHS = frozenset({"/health"})  # load balancers probe without a key


class Guard:
    """Refuses requests without the API key (401), with a body over ``max_body_bytes`` (413), or, when
    no key is set, with a Host or Origin name outside ``host_names`` (403): a web page the user
    opens cannot reach a keyless local server through DNS rebinding or a cross-site request."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int,
                 host_names: frozenset[str] | None = None) -> None:
        self.app = app
        self._key = api_key.encode() if api_key is not None else None
        self.max_body_bytes = max_body_bytes
        self.host_names = host_names  # None: any name (an app behind its own front)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._key is None and (refusal := self._foreign_name(scope)) is not None:
            await _reply(send, 403, refusal, code="host_not_allowed")
            return
        if self._key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            await _reply(send, 401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                         code="invalid_api_key", headers=[(b"www-authenticate", b"Bearer")])
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _reply(send, 413, self._too_large(declared), code="body_too_large")
            return
        body = await self._read_body(receive)
        if body is None:
            await _reply(send, 413, self._too_large(None), code="body_too_large")
            return
        await self.app(scope, _replay(body, receive), send)

    def _foreign_name(self, scope: Scope) -> str | None:
        """Why the Host or Origin header is refused, or None."""
        if self.host_names is None:
            return None
        for name, value in scope["headers"]:
            if name == b"host" and (host := _name_of(value.decode("latin-1"))) not in self.host_names:
                return (f"Host header {host!r} is not allowed without an API key; start the server with "
                        f"--allowed-host {host} (or --api-key)")
            if name == b"origin":  # "null" too: a sandboxed page on any site sends it
                origin = _name_of(urlsplit(value.decode("latin-1")).netloc)
                if origin not in self.host_names:
                    return (f"Origin header {origin!r} is not allowed without an API key; start the server "
                            f"with --allowed-host {origin} (or --api-key)")
        return None

    def _authorized(self, scope: Scope) -> bool:
        assert self._key is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # compare_digest: the time taken does not tell how much of the key matched.
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)
        return False

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (chunked uploads have no length)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, declared: int | None) -> str:
        size = f"{declared} bytes" if declared is not None else "the body"
        return f"{size} is over the limit of {self.max_body_bytes} bytes; send a shorter prompt"


def _name_of(host: str) -> str:
    """'Example.com:8000' -> 'example.com'; '[::1]:8000' -> '[::1]'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands out the body once, then passes through (for disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(send: Send, status: int, message: str, *, code: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(error_body(status, message, code=code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw + (headers or [])})
    await send({"type": "http.response.body", "body": payload})
