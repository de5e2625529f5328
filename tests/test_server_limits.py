"""``blockpool serve`` under its safety limits: API key, body size, a full queue, the bind address,
the request deadline, keep-alive comments and a reader that never reads."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers import wait_until
from tests.server_harness import MODEL_ID, leaked_blocks, running_server, serve_env

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
HI = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def server():
    # One request decodes at a time and one more may wait: a third is refused with 429. A request
    # unfinished after 4 s is cancelled; a stream with no text for 0.5 s gets a keep-alive comment.
    with running_server("--api-key", KEY, "--max-batch", "1", "--max-queue", "1", "--blocks", "60",
                        "--request-timeout-s", "4", "--keep-alive-s", "0.5") as proc:
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


# Counting goes on for all of max_tokens: at CPU speed, far longer than the 4 s deadline.
COUNT = {"model": MODEL_ID, "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,", "max_tokens": 450}


def _idle(server) -> bool:
    pool = server.pool(**AUTH)
    return leaked_blocks(pool) == 0 and not any(a["state"] == "running" for a in pool["agents"])


def test_a_request_past_its_deadline_is_504_and_frees_its_blocks(server) -> None:
    started = time.monotonic()
    response = httpx.post(f"{server.url}/v1/completions", json=COUNT, headers=AUTH, timeout=60)
    assert (response.status_code, response.json()["error"]["code"]) == (504, "timeout"), response.text
    assert "--request-timeout-s" in response.json()["error"]["message"]
    assert 3.5 < time.monotonic() - started < 30
    assert wait_until(lambda: _idle(server), timeout_s=10)


def test_a_queued_stream_gets_keep_alive_comments_then_a_timeout_event(server) -> None:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json={**COUNT, "stream": True}) as first, \
                http.stream("POST", "/v1/completions", json={**COUNT, "stream": True}) as queued:
            assert (first.status_code, queued.status_code) == (200, 200)
            lines = [line for line in queued.iter_lines() if line]
    assert ": keep-alive" in lines[:3]  # before any text: it waited behind the first
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["error"]["code"] == "timeout"
    assert wait_until(lambda: _idle(server), timeout_s=10)


def test_a_reader_that_never_reads_cannot_hold_blocks(server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({**COUNT, "stream": True}).encode()
    with socket.create_connection((host, int(port))) as reader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        reader.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                       + b"\r\n\r\n" + body)
        assert wait_until(lambda: not _idle(server), timeout_s=10)  # it runs...
        assert wait_until(lambda: _idle(server), timeout_s=10)  # ...and is cancelled at its deadline, unread
        assert _post(server, HI, AUTH).status_code == 200
