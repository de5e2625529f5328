"""Server pieces that need no model: the conversation table, settings, the guard, error bodies."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from engine.conversations import ConversationTable
from server.errors import install_handlers
from server.guard import Guard
from server.schemas import ChatCompletionRequest
from server.settings import ServeSettings, is_loopback

# -- conversations -------------------------------------------------------------------


def test_claim_continues_the_longest_whole_context_that_prefixes_the_prompt() -> None:
    table = ConversationTable(8)
    a, b = table.claim([1, 2, 3]).agent_id, table.claim([1, 2, 3, 4, 5]).agent_id
    table.release(a, [1, 2, 3, 9])
    table.release(b, [1, 2, 3, 4, 5, 6])
    claim = table.claim([1, 2, 3, 4, 5, 6, 7, 8])
    assert (claim.agent_id, claim.cached_tokens) == (b, 6)
    assert table.idle_agents() == [a]  # a claimed agent is busy until released


def test_claim_needs_the_whole_context_and_at_least_one_new_token() -> None:
    table = ConversationTable(8)
    agent = table.claim([1, 2]).agent_id
    table.release(agent, [1, 2, 3, 4])
    assert not table.claim([1, 2, 3, 5, 6]).continues  # diverges inside the context
    assert not table.claim([1, 2, 3, 4]).continues  # nothing new to prefill
    assert table.claim([1, 2, 3, 4, 7]).agent_id == agent


def test_release_keeps_the_most_recent_and_returns_the_evicted() -> None:
    table = ConversationTable(2)
    ids = [table.claim([n]).agent_id for n in range(3)]
    assert table.release(ids[0], [0, 1]) == []
    assert table.release(ids[1], [1, 1]) == []
    assert table.release(ids[2], [2, 1]) == [ids[0]]
    assert table.idle_agents() == ids[1:]
    assert len({*ids}) == 3  # fresh agents never reuse an id


def test_release_without_context_keeps_nothing() -> None:
    table = ConversationTable(2)
    agent = table.claim([1]).agent_id
    table.release(agent, [])
    assert len(table) == 0


# -- settings ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "::", "example.org"])
def test_other_hosts_need_an_api_key(host: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "none.toml"))
    assert not is_loopback(host)
    with pytest.raises(ValidationError, match="set an API key"):
        ServeSettings(host=host)
    assert ServeSettings(host=host, api_key="k" * 16).host == host


def test_settings_come_from_env_then_the_serve_table(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('max_tokens = 99\n[serve]\nport = 8123\nkv_memory = "64MiB"\nmax_queue = 3\n')
    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(config))
    monkeypatch.setenv("BLOCKPOOL_SERVE_MAX_QUEUE", "5")
    settings = ServeSettings()
    assert (settings.port, settings.kv_memory_bytes, settings.max_queue) == (8123, 64 * 2**20, 5)
    assert ServeSettings(max_queue=7).max_queue == 7


def test_kv_bits_from_the_command_line_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from server.cli import parse_settings

    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "none.toml"))
    assert ServeSettings().kv_bits == 16  # float blocks unless told
    assert parse_settings(["--kv-bits", "8"]).kv_bits == 8
    monkeypatch.setenv("BLOCKPOOL_SERVE_KV_BITS", "4")
    assert ServeSettings().kv_bits == 4
    with pytest.raises(ValidationError, match="kv_bits"):
        ServeSettings(kv_bits=5)


# -- guard and error bodies ----------------------------------------------------------


def _app(api_key: str | None, max_body_bytes: int = 1000) -> FastAPI:
    app = FastAPI()
    install_handlers(app)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest) -> dict[str, int]:
        return {"messages": len(body.messages)}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    return app


async def _post(app: FastAPI, body: bytes | dict, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        if isinstance(body, dict):
            return await client.post("/v1/chat/completions", json=body, headers=headers)
        return await client.post("/v1/chat/completions", content=body, headers=headers)


GOOD = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.anyio
async def test_api_key_is_required_except_for_health() -> None:
    app = _app("secret-key-1")
    assert (await _post(app, GOOD)).status_code == 401
    wrong = await _post(app, GOOD, {"Authorization": "Bearer secret-key-2"})
    assert (wrong.status_code, _error(wrong)["code"]) == (401, "invalid_api_key")
    assert (await _post(app, GOOD, {"Authorization": "Bearer secret-key-1"})).json() == {"messages": 1}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/health")).status_code == 200


@pytest.mark.anyio
async def test_body_over_the_limit_is_413() -> None:
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 2000}]}
    response = await _post(_app(None), big)
    assert (response.status_code, _error(response)["code"]) == (413, "body_too_large")
    assert "1000 bytes" in _error(response)["message"]


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "param"), [
    (b"{not json", None),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({**GOOD, "max_tokens": "ten"}, "max_tokens"),
    ({**GOOD, "n": 2}, "n"),
    ({**GOOD, "temperature": -1}, "temperature"),
])
async def test_bad_bodies_get_400_with_an_openai_error(body: bytes | dict, param: str | None) -> None:
    response = await _post(_app(None), body, {"content-type": "application/json"})
    assert response.status_code == 400
    error = _error(response)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


# -- command line --------------------------------------------------------------------


def test_blockpool_serve_help_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    from blockpool import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: blockpool serve" in out
    for option in ("--model", "--host", "--port", "--kv-memory", "--blocks", "--api-key", "--max-queue"):
        assert option in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--port", "x"], "invalid int value"),
    (["--port", "70000"], "--port: Input should be less than or equal to 65535"),
    (["--kv-memory", "lots"], "is not a size"),
    (["--blocks", "4", "--kv-memory", "1MiB"], "not allowed with argument"),
    (["--api-key", "short"], "--api-key: String should have at least 8 characters"),
    (["--kv-bits", "5"], "invalid choice: 5"),
])
def test_bad_serve_options_exit_2_with_a_message(argv: list[str], message: str, monkeypatch, tmp_path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from blockpool import cli

    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "none.toml"))
    try:
        code = cli.main(["serve", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


# -- hardening -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_unexpected_exception_is_a_json_500_without_internals() -> None:
    app = FastAPI()
    install_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail /home/x")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    error = _error(response)
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    assert "secret" not in response.text and "RuntimeError" not in response.text


def test_host_names_and_the_key_kept_secret(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "none.toml"))
    settings = ServeSettings(host="::1", allowed_host=" Box.lan, proxy.example ", api_key="key-0123456789")
    assert settings.host_names() == {"localhost", "127.0.0.1", "[::1]", "box.lan", "proxy.example"}
    assert "key-0123456789" not in repr(settings) and "key-0123456789" not in str(settings.model_dump())
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "key-0123456789"


def test_uvicorn_gets_the_connection_limits(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from server.main import uvicorn_config

    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "none.toml"))
    settings = ServeSettings(timeout_keep_alive_s=3, max_incomplete_event_bytes="16KiB", limit_concurrency=9)
    config = uvicorn_config(settings, FastAPI())
    assert (config.http, config.timeout_keep_alive, config.h11_max_incomplete_event_size,
            config.limit_concurrency) == ("h11", 3, 16 * 1024, 9)
