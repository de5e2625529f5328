"""``blockpool serve`` as a real subprocess on 127.0.0.1, driven by the official openai client.

One server for this module and test_server_load.py (the session's ``server`` fixture, in
conftest: model load ~10 s); replies are checked against live references: ``mlx_lm.generate``
on the same rendered prompt, and the in-process engine continuing a conversation from its blocks.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from engine import BlockPoolBatchEngine
from pool import BlockPool
from tests.reference import reference, run_alone
from tests.helpers import wait_until
from tests.server_harness import MODEL_ID, leaked_blocks

MAX_TOKENS = 16
SYSTEM = {"role": "system", "content": "You are a concise assistant."}


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def chat(client: openai.OpenAI, messages: list[dict[str, str]], **kwargs):
    return client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=MAX_TOKENS, **kwargs)


# -- replies ---------------------------------------------------------------------------


@pytest.mark.parametrize("question", ["What is the capital of France?", "Write one line about the sea."])
def test_greedy_chat_equals_mlx_lm_generate(client, default_model, question: str) -> None:
    model, tokenizer = default_model
    messages = [SYSTEM, {"role": "user", "content": question}]
    reply = chat(client, messages)
    assert reply.choices[0].message.content == reference(model, tokenizer, render(tokenizer, messages), MAX_TOKENS)
    assert reply.model == MODEL_ID
    assert reply.usage.prompt_tokens == len(tokenizer.encode(render(tokenizer, messages), add_special_tokens=False))


def test_text_completion_equals_mlx_lm_generate(client, default_model) -> None:
    model, tokenizer = default_model
    prompt = "The three primary colors are"
    reply = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=MAX_TOKENS)
    assert reply.choices[0].text == reference(model, tokenizer, prompt, MAX_TOKENS)
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_streaming_equals_non_streaming(client) -> None:
    messages = [SYSTEM, {"role": "user", "content": "Name three fruits."}]
    whole = chat(client, messages)
    chunks = list(chat(client, messages, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content
    assert reasons == [whole.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    usage = chunks[-1].usage
    assert (chunks[-1].choices, usage.completion_tokens) == ([], whole.usage.completion_tokens)
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_streamed_text_completion_equals_non_streamed(client) -> None:
    prompt = "Once upon a time"
    whole = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=MAX_TOKENS)
    chunks = list(client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=MAX_TOKENS, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text


def test_three_turn_chat_reuses_blocks_and_matches_the_in_process_engine(client, default_model, default_spec):
    model, tokenizer = default_model
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, 200), default_spec)
    messages = [{"role": "system", "content": "You answer in one short sentence."}]
    expected_cached = 0
    for turn, question in enumerate(["Name a planet.", "Name another one.", "Which is bigger?"]):
        messages.append({"role": "user", "content": question})
        ids = engine.encode(render(tokenizer, messages))
        context = engine.agent_blocks("ref")
        if context is not None:
            # The turn's full prompt starts with the whole stored context (reply and <|im_end|> included).
            assert ids[: context.total_tokens] == context.token_ids
            expected_cached = context.total_tokens
        done = run_alone(engine, "ref", ids[expected_cached:], MAX_TOKENS, cache=context)
        reply = chat(client, messages)
        assert reply.choices[0].message.content == done.text
        assert reply.usage.prompt_tokens == len(ids)
        assert reply.usage.prompt_tokens_details.cached_tokens == expected_cached
        assert (expected_cached > 0) == (turn > 0)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})


def test_stop_strings_cut_the_reply_like_the_engine(client, default_model, default_spec) -> None:
    model, tokenizer = default_model
    messages = [SYSTEM, {"role": "user", "content": "Count from one to ten in words, with commas."}]
    engine = BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, 60), default_spec)
    uid = engine.submit("ref", render(tokenizer, messages), None, MAX_TOKENS, stop=["seated", "zebra"])
    expected = next(c for c in engine.step() if c.uid == uid)
    reply = chat(client, messages, stop=["seated", "zebra"])
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == (expected.text, "stop")
    assert "seated" not in expected.text and expected.finish_reason == "stop"


def test_developer_role_and_text_parts_render_like_system_and_strings(client) -> None:
    plain = chat(client, [SYSTEM, {"role": "user", "content": "Name a bird."}])
    parts = chat(client, [{"role": "developer", "content": SYSTEM["content"]},
                          {"role": "user", "content": [{"type": "text", "text": "Name a "},
                                                       {"type": "text", "text": "bird."}]}])
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens


def test_the_same_seed_samples_the_same_reply(client) -> None:
    messages = [SYSTEM, {"role": "user", "content": "Invent a name for a cat."}]
    replies = {chat(client, messages, temperature=1.0, top_p=0.9, seed=7).choices[0].message.content
               for _ in range(2)}
    assert len(replies) == 1


def test_models_and_health(client, server) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "model": MODEL_ID}


# -- bad input -------------------------------------------------------------------------


def _post(server, body: bytes | dict, path: str = "/v1/chat/completions") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}{path}", content=content, headers={"content-type": "application/json"},
                      timeout=60)


GOOD = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
BAD_BODIES = {
    "malformed JSON": (b'{"model": "x", "messages": [', 400, "invalid_json"),
    "wrong type": ({**GOOD, "max_tokens": "ten"}, 400, "invalid_value"),
    "unknown model": ({**GOOD, "model": "gpt-9"}, 404, "model_not_found"),
    "empty messages": ({**GOOD, "messages": []}, 400, "invalid_value"),
    "message without content": ({**GOOD, "messages": [{"role": "user"}]}, 400, "invalid_value"),
    "unknown role": ({**GOOD, "messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_value"),
    "max_tokens over the limit": ({**GOOD, "max_tokens": 100_000}, 400, "max_tokens_too_large"),
    "two choices": ({**GOOD, "n": 2}, 400, "invalid_value"),
    "five stop strings": ({**GOOD, "stop": list("abcde")}, 400, "invalid_stop"),
    "seed 2**70": ({**GOOD, "seed": 2**70}, 400, "invalid_value"),
    "seed -2": ({**GOOD, "seed": -2}, 400, "invalid_value"),
    "prompt larger than the pool": (
        {**GOOD, "messages": [{"role": "user", "content": "hello " * 11_000}]}, 400, "context_length_exceeded"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_input_gets_a_4xx_with_an_openai_error_body(server, case: str) -> None:
    body, status, code = BAD_BODIES[case]
    response = _post(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert _post(server, GOOD).status_code == 200  # and the server keeps serving


@pytest.mark.parametrize("seed", [-1, 0, 2**63 - 1])
def test_any_valid_seed_is_served_and_the_server_stays_healthy(server, seed: int) -> None:
    """-1 is llama.cpp's "random"; once it ended the engine thread and every later request got 503."""
    response = _post(server, {**GOOD, "seed": seed, "temperature": 1.0})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert _post(server, GOOD).status_code == 200


def test_unknown_route_and_bad_token_ids(server) -> None:
    missing = httpx.get(f"{server.url}/v1/nothing")
    assert (missing.status_code, set(missing.json()["error"])) == (404, {"message", "type", "param", "code"})
    bad_ids = _post(server, {"model": MODEL_ID, "prompt": [1, 2, 10**9], "max_tokens": 2}, "/v1/completions")
    assert (bad_ids.status_code, bad_ids.json()["error"]["code"]) == (400, "invalid_token_ids")


def test_openai_client_sees_typed_errors(client) -> None:
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="at least 1 item"):
        client.chat.completions.create(model=MODEL_ID, messages=[])


# -- blocks, metrics, telemetry ---------------------------------------------------------


def test_a_disconnecting_stream_frees_its_blocks(server) -> None:
    body = {"model": MODEL_ID, "stream": True, "max_tokens": 400,
            "messages": [{"role": "user", "content": "Tell me a very long story about a dragon and a knight."}]}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as response:
        data_lines = (line for line in response.iter_lines() if line.startswith("data: "))
        for _ in range(4):
            next(data_lines)
        running = [a for a in server.pool()["agents"] if a["state"] == "running"]
        assert len(running) == 1 and running[0]["blocks"] > 0
    agent_id = running[0]["agent_id"]

    def freed() -> bool:
        pool = server.pool()
        return all(a["agent_id"] != agent_id for a in pool["agents"]) and leaked_blocks(pool) == 0

    assert wait_until(freed, timeout_s=10), server.pool()["agents"]


def test_metrics_mirror_vllm_names(server, client) -> None:
    messages = [SYSTEM, {"role": "user", "content": "Say hi."}]
    first = chat(client, messages)
    chat(client, messages + [{"role": "assistant", "content": first.choices[0].message.content},
                             {"role": "user", "content": "Again."}])
    text = httpx.get(f"{server.url}/metrics").text
    samples = {line.split("{")[0]: line for line in text.splitlines() if line and not line.startswith("#")}
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc",
                 "prefix_cache_queries_total", "prefix_cache_hits_total", "num_preemptions_total",
                 "prompt_tokens_total", "generation_tokens_total", "request_success_total",
                 "time_to_first_token_seconds_bucket", "inter_token_latency_seconds_bucket",
                 "e2e_request_latency_seconds_count", "pool_blocks_used", "pool_blocks_free", "pool_spills_total",
                 "pool_gather_seconds_count", "pool_scatter_seconds_count"):
        assert f"blockpool:{name}" in samples, name
    hits = float(samples["blockpool:prefix_cache_hits_total"].rsplit(" ", 1)[1])
    usage = float(samples["blockpool:kv_cache_usage_perc"].rsplit(" ", 1)[1])
    assert hits > 0 and 0 < usage <= 1
    assert 'model_name="SmolLM2-135M-Instruct"' in samples["blockpool:prefix_cache_hits_total"]


def test_pool_snapshot_names_every_block_owner(server) -> None:
    pool = server.pool()
    owners = {row[2] for row in pool["blocks"]}
    assert owners == {a["agent_id"] for a in pool["agents"] if a["blocks"]}
    assert pool["used_blocks"] == len(pool["blocks"]) == sum(a["blocks"] for a in pool["agents"])
    assert pool["free_blocks"] + pool["used_blocks"] == pool["total_blocks"] == 1200
    assert len(pool["layer_types"]) == pool["n_layers"] == 30


def test_event_stream_starts_with_the_pool_and_follows_requests(server) -> None:
    kinds: list[str] = []
    with httpx.stream("GET", f"{server.url}/v1/events", timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        poster = threading.Thread(target=_post, args=(server, GOOD))
        started = time.monotonic()
        for line in lines:
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
                if len(kinds) == 1:
                    poster.start()
            elif line.startswith("data: "):
                json.loads(line.removeprefix("data: "))
            if "request_finished" in kinds or time.monotonic() - started > 30:
                break
    poster.join()
    assert kinds[0] == "pool_snapshot"
    assert {"request_submitted", "engine_step", "request_finished"} <= set(kinds)
