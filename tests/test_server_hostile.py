"""``blockpool serve`` against hostile clients (the session's ``server``): every bad request is its own
clear 4xx, unsupported OpenAI fields are refused by name, foreign Host / Origin names get 403, and
the engine thread keeps serving whatever came before."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.server_harness import MODEL_ID, leaked_blocks
from tests.helpers import wait_until

GOOD = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
TEXT = {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2}
SURROGATE = "hi \ud800"  # json.dumps writes it as the escape "\ud800", which JSON allows and UTF-8 cannot hold


def _post(server, body: dict, path: str = "/v1/chat/completions", **headers: str) -> httpx.Response:
    # json.dumps (ASCII escapes): httpx's own encoder refuses a lone surrogate before sending.
    return httpx.post(f"{server.url}{path}", content=json.dumps(body).encode(), timeout=60,
                      headers={"content-type": "application/json", **headers})


def _error(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {**GOOD, "messages": [{"role": "user", "content": SURROGATE}]}, "messages.0.content"),
    ("/v1/chat/completions", {**GOOD, "messages": [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]},
     "messages.1.content"),
    ("/v1/chat/completions", {**GOOD, "stop": [SURROGATE]}, "stop"),
    ("/v1/completions", {**TEXT, "prompt": SURROGATE}, "prompt"),
])
def test_a_lone_surrogate_is_a_400_naming_where_it_is(server, path: str, body: dict, param: str) -> None:
    response = _post(server, body, path)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert (error["param"], error["code"]) == (param, "invalid_text")
    assert "surrogate" in error["message"] and "'\\ud800' at index 3" in error["message"]


UNSUPPORTED = {
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "auto",
    "response_format": {"type": "json_object"},
    "logit_bias": {"42": 5},
    "presence_penalty": 0.5,
    "frequency_penalty": -1.0,
    "logprobs": True,
}


@pytest.mark.parametrize("field", list(UNSUPPORTED))
def test_an_unsupported_field_is_a_400_naming_it(server, field: str) -> None:
    response = _post(server, {**GOOD, field: UNSUPPORTED[field]})
    assert response.status_code == 400, response.text
    error = _error(response)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", field, "unsupported_parameter")
    assert error["message"].startswith(f"{field}=")


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {**GOOD, "tools": [], "tool_choice": "none", "response_format": {"type": "text"},
                              "logit_bias": {}, "presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": False,
                              "n": 1}),
    ("/v1/completions", {**TEXT, "echo": False, "logprobs": 0, "tools": [{"ignored": "on completions"}]}),
])
def test_the_neutral_values_of_those_fields_are_served(server, path: str, body: dict) -> None:
    assert _post(server, body, path).status_code == 200


def test_echo_on_completions_is_refused(server) -> None:
    error = _error(_post(server, {**TEXT, "echo": True}, "/v1/completions"))
    assert (error["param"], error["code"]) == ("echo", "unsupported_parameter")


HOSTILE = [
    {**GOOD, "seed": -1, "temperature": 1.0},
    {**GOOD, "seed": 2**70}, {**GOOD, "seed": 1.5}, {**GOOD, "seed": "abc"},
    {**GOOD, "messages": [{"role": "user", "content": SURROGATE}]},
    {**GOOD, "max_tokens": 10**12}, {**GOOD, "messages": []}, {**GOOD, "model": "gpt-9"},
    {**GOOD, "messages": "hi"}, {**GOOD, "temperature": "hot"}, {**GOOD, "stop": 7}, {**GOOD, "top_p": []},
    {**GOOD, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
    {**GOOD, "stream": "yes"}, {**GOOD, "tools": [{}]}, {**GOOD, "max_tokens": -5}, {**GOOD, "max_tokens": 0},
]


def test_the_whole_hostile_set_then_a_normal_request(server) -> None:
    for body in HOSTILE:
        response = _post(server, body)
        assert response.status_code in (200, 400, 404), (body, response.status_code, response.text)
        if response.status_code != 200:
            _error(response)
    for path in ("/v1/chat/completions", "/v1/completions"):
        response = _post(server, {**TEXT, "prompt": SURROGATE, "messages": [{"role": "user", "content": SURROGATE}]},
                         path)
        assert response.status_code == 400, response.text
    normal = _post(server, {**GOOD, "max_tokens": 4})
    assert normal.status_code == 200, normal.text
    assert normal.json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert "engine thread failed" not in server.log()
    assert wait_until(lambda: leaked_blocks(server.pool()) == 0, timeout_s=10)


@pytest.mark.parametrize(("header", "value"), [("Host", "evil.example"), ("Host", "rebind.attacker.net:8000"),
                                               ("Origin", "http://evil.example"), ("Origin", "null")])
def test_a_foreign_host_or_origin_is_403_without_an_api_key(server, header: str, value: str) -> None:
    response = _post(server, GOOD, **{header: value})
    assert response.status_code == 403
    error = _error(response)
    assert (error["type"], error["code"]) == ("permission_error", "host_not_allowed")
    assert f"{header} header" in error["message"] and "--allowed-host" in error["message"]


@pytest.mark.parametrize("host", ["localhost:9", "127.0.0.1", "LOCALHOST", "[::1]:8000"])
def test_loopback_host_names_are_served(server, host: str) -> None:
    response = _post(server, GOOD, Host=host, Origin=f"http://{host}")
    assert response.status_code == 200, response.text


def test_a_client_that_connects_and_never_sends_blocks_nobody(server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as silent, socket.create_connection((host, int(port))) as half:
        half.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        assert _post(server, GOOD).status_code == 200
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        silent.settimeout(0.1)
        with pytest.raises(TimeoutError):
            silent.recv(1)  # still open: it costs one connection of --limit-concurrency, nothing more
