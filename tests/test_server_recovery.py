"""``blockpool serve`` in-process (the FastAPI app over the real model, through httpx's ASGI
transport) when its engine fails in a step: the request in flight gets its error, and the
rebuilt engine serves the next ones (the thread once died there, and every later request got 503)."""

from __future__ import annotations

import httpx
import pytest

from engine.batch_engine import BlockPoolBatchEngine
from server.app import create_app
from server.main import serve_state, start_engine
from server.settings import ServeSettings
from tests.helpers import fail_first_call
from tests.server_harness import MODEL_ID

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]
CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


@pytest.fixture
def no_serve_env(monkeypatch):
    for name in ServeSettings.model_fields:
        monkeypatch.delenv(f"BLOCKPOOL_SERVE_{name.upper()}", raising=False)


@pytest.mark.usefixtures("no_serve_env")
async def test_a_failed_step_fails_its_request_and_the_server_serves_the_next(default_model, monkeypatch):
    settings = ServeSettings(blocks=200)
    link, hub = start_engine(settings, loaded_model=default_model)
    fail_first_call(monkeypatch, BlockPoolBatchEngine, "step_once", OSError(28, "No space left on device (injected)"))
    transport = httpx.ASGITransport(app=create_app(serve_state(settings, link, hub)))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=120) as client:
            failed = await client.post("/v1/chat/completions", json=CHAT)
            assert failed.status_code == 503 and "injected" in failed.json()["error"]["message"]
            served = await client.post("/v1/chat/completions", json=CHAT)
            assert served.status_code == 200, served.text
            assert served.json()["choices"][0]["message"]["content"]
            assert (await client.get("/health")).status_code == 200
    finally:
        link.owner.stop(timeout_s=30)
