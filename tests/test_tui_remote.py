"""blockpool-tui --server: the TUI (Pilot) chatting through real servers started here as subprocesses.

``blockpool serve`` (replies equal mlx_lm.generate's; the panels fill from its events; a
wrong key; the server killed mid-reply and restarted) and ``mlx_lm.server`` (panels say
what it does not expose). Short replies keep the suite short.
"""

from __future__ import annotations

import httpx
import pytest
from rich.text import Text
from textual.widgets import Static

from pool import ModelCacheSpec
from tests.reference import reference
from tests.remote_harness import mlx_lm_server
from tests.helpers import map_colours, send, wait_for, wait_until
from tests.server_harness import free_port, leaked_blocks, start_serve, stop
from tui.app import BlockpoolApp
from tui.remote.metrics_view import read_figures
from tui.settings import TuiSettings
from tui.widgets import BlockMapPanel, EnginePanel

KEY = "test-key-12t"
MAX_TOKENS = 12
SYSTEM = "You are a helpful assistant."
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_user_config")]


@pytest.fixture(scope="module")
def keyed_server():
    server = start_serve(free_port(), "--api-key", KEY)
    yield server
    stop(server)


def make_app(url: str, **settings) -> BlockpoolApp:
    values = {"agents": 1, "max_tokens": MAX_TOKENS, "server": url, "system": SYSTEM, **settings}
    return BlockpoolApp(TuiSettings(**values))


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def chat_text(app: BlockpoolApp, agent_id: str) -> str:
    pane = app.pane(agent_id)
    return "\n".join(str(static.content) for static in pane.query(Static))


def static_text(widget, selector: str) -> str:
    content = widget.query_one(selector, Static).content
    return content.plain if isinstance(content, Text) else str(content)


async def test_chats_through_blockpool_serve_and_panels_show_its_pool(keyed_server, default_model):
    model, tokenizer = default_model
    app = make_app(keyed_server.url, api_key=KEY)
    async with app.run_test(size=(150, 44)) as pilot:
        await wait_for(pilot, lambda: app.ready and app.server_status is not None
                       and app.server_status.state == "connected")
        assert "blockpool serve" in app.sub_title
        (agent,) = app.roster
        await send(pilot, "Hi")
        await wait_for(pilot, lambda: not agent.busy and agent.conversation.turns)
        reply = agent.conversation.turns[-1].content
        first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
        assert reply == reference(model, tokenizer, render(tokenizer, first), MAX_TOKENS)

        # The whole history goes to the server each turn: the second reply continues the conversation.
        await send(pilot, "And in French?")
        await wait_for(pilot, lambda: not agent.busy and len(agent.conversation.turns) == 4)
        second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "And in French?"}]
        assert agent.conversation.turns[-1].content == reference(model, tokenizer, render(tokenizer, second),
                                                                 MAX_TOKENS)

        # The server's pool, from its event stream: this agent's conversation under its own colour.
        await wait_for(pilot, lambda: app.stats is not None and app.stats.pool.agent_usage().get(agent.agent_id))
        assert agent.num_blocks > 0
        assert agent.colour in map_colours(app)
        await wait_for(pilot, lambda: app.stats.telemetry.requests_finished >= 1
                       and app.stats.telemetry.last_step is not None)
        assert "blocks" in static_text(app.query_one(BlockMapPanel), ".summary")
        # The header holds the connection; the pool panel's title names the server's block format.
        kv_format = ModelCacheSpec.from_model(model).kv_format
        assert app.query_one(BlockMapPanel).border_title.startswith(f"KV blocks · {kv_format} · ")
        assert "tok/s" in str(app.query_one(EnginePanel).content)

        # Another client's conversation shows as another owner, without its text.
        httpx.post(f"{keyed_server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": "SmolLM2-135M-Instruct", "max_tokens": 4,
                         "messages": [{"role": "user", "content": "Someone else"}]}, timeout=60)
        await wait_for(pilot, lambda: any(owner.startswith("conv-") for owner in app.stats.pool.agent_usage()))
        assert "Someone else" not in chat_text(app, agent.agent_id)

        # Its /metrics, read as the TUI reads any server's (vLLM's names, blockpool: prefix).
        metrics = httpx.get(f"{keyed_server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        figures = read_figures(metrics.text)
        assert figures.kv_usage is not None and 0 < figures.kv_usage <= 1
        assert figures.prefix_hit_rate is not None and figures.running == 0 and figures.preemptions == 0


async def test_escape_closes_the_stream_and_the_server_frees_the_blocks(keyed_server):
    app = make_app(keyed_server.url, api_key=KEY, max_tokens=400)
    async with app.run_test(size=(150, 44)) as pilot:
        await wait_for(pilot, lambda: app.ready and app.server_status is not None
                       and app.server_status.state == "connected")
        (agent,) = app.roster
        await send(pilot, "Tell me a long story about a ship.")
        await wait_for(pilot, lambda: agent.status == "generating")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not agent.busy, timeout_s=30)
        assert agent.status == "idle" and agent.conversation.turns[-1].content.strip()

        def settled() -> dict | None:
            pool = keyed_server.pool(Authorization=f"Bearer {KEY}")
            running = [a for a in pool["agents"] if a["state"] == "running"]
            return pool if not running and leaked_blocks(pool) == 0 else None

        assert wait_until(settled, timeout_s=10), keyed_server.pool(Authorization=f"Bearer {KEY}")


async def test_a_wrong_key_says_401_and_keeps_the_text(keyed_server):
    app = make_app(keyed_server.url, api_key="wrong")
    async with app.run_test(size=(150, 44)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        await wait_for(pilot, lambda: app.server_status is not None and app.server_status.state == "refused")
        assert "401" in app.sub_title
        (agent,) = app.roster
        await send(pilot, "Hello there")
        await wait_for(pilot, lambda: agent.status == "error")
        assert "refused the API key (HTTP 401" in (agent.error or "")
        assert "--api-key" in chat_text(app, agent.agent_id)
        assert app.pane(agent.agent_id).input.value == "Hello there"
        assert agent.conversation.turns == []


async def test_nothing_listening_says_so_and_keeps_the_text():
    app = make_app(f"http://127.0.0.1:{free_port()}")
    async with app.run_test(size=(150, 44)) as pilot:
        await wait_for(pilot, lambda: app.ready)
        await wait_for(pilot, lambda: app.server_status is not None and app.server_status.state == "unreachable")
        assert "reconnecting in" in app.sub_title
        (agent,) = app.roster
        await send(pilot, "Anyone?")
        await wait_for(pilot, lambda: agent.status == "error")
        assert "cannot reach the server" in (agent.error or "")
        assert app.pane(agent.agent_id).input.value == "Anyone?"


async def test_server_killed_mid_reply_then_restarted(default_model):
    port = free_port()
    server = start_serve(port)
    app = make_app(server.url, max_tokens=400)
    try:
        async with app.run_test(size=(150, 44)) as pilot:
            await wait_for(pilot, lambda: app.ready and app.server_status is not None
                           and app.server_status.state == "connected")
            (agent,) = app.roster
            await send(pilot, "Tell me a long story about a fox.")
            await wait_for(pilot, lambda: agent.status == "generating")
            app.pane(agent.agent_id).input.value = "And a cat."  # a draft typed meanwhile
            server.process.kill()
            server.process.wait()
            await wait_for(pilot, lambda: agent.status == "error", timeout_s=30)
            assert "went away mid-reply" in (agent.error or "")
            # The failed message is not dropped: it goes back before the draft.
            assert app.pane(agent.agent_id).input.value == "Tell me a long story about a fox. And a cat."
            app.pane(agent.agent_id).input.value = "Tell me a long story about a fox."
            assert agent.conversation.turns == []
            await wait_for(pilot, lambda: app.server_status.state == "unreachable", timeout_s=30)
            assert "reconnecting" in app.sub_title
            app.refresh_panels()
            assert "pool shows again once it is back" in static_text(app.query_one(BlockMapPanel), ".summary")

            server = start_serve(port)
            await wait_for(pilot, lambda: app.server_status.state == "connected", timeout_s=60)
            app.settings.max_tokens = MAX_TOKENS
            app.pane(agent.agent_id).input.focus()
            await pilot.press("enter")  # the kept text, sent again
            await wait_for(pilot, lambda: not agent.busy and len(agent.conversation.turns) == 2)
            assert agent.status == "idle"
            model, tokenizer = default_model
            messages = [{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": "Tell me a long story about a fox."}]
            assert agent.conversation.turns[-1].content == reference(model, tokenizer, render(tokenizer, messages),
                                                                     MAX_TOKENS)
    finally:
        stop(server)


async def test_chats_through_mlx_lm_server_and_panels_say_what_it_does_not_expose(default_model):
    with mlx_lm_server(free_port()) as server:
        app = make_app(server.url)
        async with app.run_test(size=(150, 44)) as pilot:
            await wait_for(pilot, lambda: app.ready and app.server_status is not None
                           and app.server_status.state == "connected")
            assert "no /metrics" in app.sub_title
            (agent,) = app.roster
            await send(pilot, "Hi")
            await wait_for(pilot, lambda: not agent.busy and agent.conversation.turns)
            assert agent.status == "idle"
            model, tokenizer = default_model
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
            assert agent.conversation.turns[-1].content == reference(model, tokenizer, render(tokenizer, messages),
                                                                     MAX_TOKENS)
            app.refresh_panels()
            await pilot.pause()
            summary = static_text(app.query_one(BlockMapPanel), ".summary")
            assert "exposes no block map" in summary and "no /metrics" in summary
            assert "server" in str(app.query_one(EnginePanel).content)
