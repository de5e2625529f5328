"""``blockpool serve`` under load and fuzzing: concurrent streaming clients with growing histories
leak no blocks, and schema-driven requests find no server error (the session's ``server``)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import wait_until
from tests.server_harness import MODEL_ID, leaked_blocks


# -- load -------------------------------------------------------------------------------

NUM_CLIENTS = 12  # more than the server's batch of 8: some wait in its queue
NUM_TURNS = 3
LOAD_TOKENS = 8


async def _conversation(client: openai.AsyncOpenAI, index: int) -> list[dict]:
    messages = [{"role": "system", "content": f"You are assistant number {index}. Be brief."}]
    turns = []
    for turn in range(NUM_TURNS):
        messages.append({"role": "user", "content": f"Question {turn} from client {index}: name a number."})
        started = time.monotonic()
        first: float | None = None
        text, usage = "", None
        stream = await client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=LOAD_TOKENS,
                                                      stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.monotonic()
                text += chunk.choices[0].delta.content
            if chunk.usage is not None:
                usage = chunk.usage
        turns.append({"ttft_s": (first or time.monotonic()) - started, "tokens": usage.completion_tokens,
                      "cached": usage.prompt_tokens_details.cached_tokens})
        messages.append({"role": "assistant", "content": text})
    return turns


async def _load(url: str) -> tuple[list, float]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    started = time.monotonic()
    results = await asyncio.wait_for(
        asyncio.gather(*(_conversation(client, i) for i in range(NUM_CLIENTS)), return_exceptions=True), 300)
    return results, time.monotonic() - started


def test_concurrent_streaming_clients(server) -> None:
    results, wall_s = asyncio.run(_load(server.url))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    turns = [t for r in results for t in r]
    assert len(turns) == NUM_CLIENTS * NUM_TURNS
    assert all(t["cached"] > 0 for r in results for t in r[1:])  # later turns continue their blocks
    ttft = sorted(t["ttft_s"] for t in turns)
    tokens = sum(t["tokens"] for t in turns)
    print(f"\n{NUM_CLIENTS} clients x {NUM_TURNS} turns: TTFT p50 {statistics.median(ttft):.2f} s, "
          f"p95 {ttft[int(0.95 * (len(ttft) - 1))]:.2f} s, {tokens / wall_s:.1f} tok/s aggregate, {wall_s:.0f} s")
    pool = wait_until(lambda: _settled(server.pool()), timeout_s=10)
    assert pool is not None and leaked_blocks(pool) == 0 and pool["reserved_blocks"] == 0


def _settled(pool: dict) -> dict | None:
    """The pool once no request runs, else None."""
    return None if any(a["state"] == "running" for a in pool["agents"]) else pool


# -- schema fuzzing ---------------------------------------------------------------------

FUZZ_TOKENS = 3  # generated bodies may ask for thousands of tokens; a CPU run must stay short
# Examples per operation: 12 keep the suite short; a deeper run sets hundreds
# (BLOCKPOOL_FUZZ_EXAMPLES=300 .venv/bin/python -m pytest tests/test_server_load.py -k fuzzing).
FUZZ_EXAMPLES = int(os.environ.get("BLOCKPOOL_FUZZ_EXAMPLES", "12"))


@pytest.fixture
def api_schema(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    # The coverage phase sends every boundary case the schema allows (hundreds of model runs here):
    # bounded, random fuzzing only.
    schema.config.phases.coverage.enabled = False
    return schema


# /v1/events never ends by design; everything else is fuzzed.
fuzzed = schemathesis.pytest.from_fixture("api_schema").exclude(path="/v1/events")


@fuzzed.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_schema_fuzzing_finds_no_server_errors(case) -> None:
    if isinstance(case.body, dict):
        if isinstance(case.body.get("model"), str):
            case.body["model"] = MODEL_ID  # a random id only reaches the 404; this one reaches the engine
        for field in ("max_tokens", "max_completion_tokens"):
            if isinstance(case.body.get(field), int) and case.body[field] > FUZZ_TOKENS:
                case.body[field] = FUZZ_TOKENS
        if "max_tokens" not in case.body and "max_completion_tokens" not in case.body:
            case.body["max_tokens"] = FUZZ_TOKENS
    response = case.call(timeout=120)
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                             content_type_conformance, response_schema_conformance])
