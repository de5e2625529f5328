"""``blockpool serve`` under its safety limits: API key, body size, a full queue, the bind address."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.helpers import wait_until
from tests.server_harness import MODEL_ID, leaked_blocks, running_server, serve_env

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
HI = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def server():
    # One request decodes at a time and one more may wait: a third is refused with 429.
    with running_server("--api-key", KEY, "--max-batch", "1", "--max-queue", "1", "--blocks", "60") as proc:
        yield proc


def _post(server, body: dict | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    return httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60, **kwargs)


def test_the_api_key_is_required(server) -> None:
    assert _post(server, HI).status_code == 401
    wrong = _post(server, HI, {"Authorization": "Bearer test-key-0123456780"})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_api_key")
    assert _post(server, HI, AUTH).status_code == 200
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/health").status_code == 200  # probes need no key


def test_a_body_over_the_limit_is_413(server) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * (5 * 2**20) + b'"}]}'
    response = _post(server, body, {**AUTH, "content-type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (413, "body_too_large")


def test_a_prompt_larger_than_the_pool_is_400(server) -> None:
    # 60 blocks over 30 layers hold 512 tokens.
    body = {**HI, "messages": [{"role": "user", "content": "hello " * 700}]}
    response = _post(server, body, AUTH)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "context_length_exceeded")
    assert "60" in response.json()["error"]["message"]


def test_a_full_queue_answers_429_with_retry_after(server) -> None:
    long = {**HI, "max_tokens": 200, "stream": True,
            "messages": [{"role": "user", "content": "Write a long story about a castle."}]}
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=long) as first, \
                http.stream("POST", "/v1/chat/completions", json=long) as second:
            assert (first.status_code, second.status_code) == (200, 200)
            refused = _post(server, HI, AUTH)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["type"] == "rate_limit_error"
    # Both streams were dropped: the slots and their blocks come back.
    assert wait_until(lambda: _post(server, HI, AUTH).status_code == 200, timeout_s=20)
    assert wait_until(lambda: leaked_blocks(server.pool(**AUTH)) == 0, timeout_s=10)


def test_a_non_loopback_host_needs_an_api_key() -> None:
    command = [sys.executable, "-m", "blockpool", "serve", "--host", "0.0.0.0", "--port", "9"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=serve_env())
    assert done.returncode == 2
    assert "set an API key" in done.stderr and "'0.0.0.0'" in done.stderr
