"""The ``--server`` client's chat stream against canned SSE bodies (no server, no model)."""

from __future__ import annotations

import httpx
import pytest

from tui.remote.client import ServerClient, StreamDone, StreamText
from tui.remote.errors import ServerError

URL = "http://127.0.0.1:8000"
TEXT = 'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'
DONE = 'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'


def _client(body: str) -> ServerClient:
    client = ServerClient(URL, api_key="key-0123456789")
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, content=body.encode(), headers={"content-type": "text/event-stream"}))
    client.http = httpx.AsyncClient(transport=transport, base_url=URL)
    return client


async def _events(body: str) -> list:
    return [event async for event in _client(body).chat({"messages": []})][1:]  # after StreamOpened


@pytest.mark.anyio
async def test_keep_alive_comments_are_skipped() -> None:
    events = await _events(": keep-alive\n\n" * 3 + TEXT + ": keep-alive\n\n" + DONE)
    assert events == [StreamText("Hi"), StreamDone("stop")]


@pytest.mark.anyio
@pytest.mark.parametrize("body", [TEXT, "", ": keep-alive\n\n" + TEXT])
async def test_a_stream_that_ends_without_done_or_a_finish_reason_is_an_error(body: str) -> None:
    with pytest.raises(ServerError, match="ended early"):
        await _events(body)


def test_the_client_never_goes_through_an_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert ServerClient(URL).http.trust_env is False


def test_temperature_over_the_servers_limit_is_refused_at_parse(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from tui.cli import SettingsError, parse_settings

    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "absent.toml"))
    assert parse_settings(["--temperature", "2"]).temperature == 2.0
    with pytest.raises(SettingsError, match="--temperature: Input should be less than or equal to 2"):
        parse_settings(["--server", "http://127.0.0.1:8000", "--temperature", "2.5"])
