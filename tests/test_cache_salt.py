"""``cache_salt`` (vLLM's name) keeps tenants apart: a fresh context shares prefix blocks, partial
blocks, a leader's prefill and (in the server) idle conversations only with its own salt."""

from __future__ import annotations

import httpx
import pytest

from engine import BlockPoolBatchEngine
from pool import BlockPool
from pool.prefix_hash import BlockHasher
from tests.server_harness import MODEL_ID

# ~350 tokens: one full block to share (or not), and a partial one
SYSTEM = " ".join(f"Rule {i}: answer in plain words and keep every reply short." for i in range(24))


@pytest.fixture
def engine(default_model, default_spec):
    model, tokenizer = default_model
    return BlockPoolBatchEngine(model, tokenizer, BlockPool(default_spec, total_blocks=400), default_spec)


def turn(engine: BlockPoolBatchEngine, agent_id: str, salt: str | None, question: str = "Say hi."):
    uid = engine.submit(agent_id, f"{SYSTEM}\n{question}", max_tokens=4, cache_salt=salt)
    return next(c for c in engine.step() if c.uid == uid)


def test_a_salt_starts_its_own_hash_chain() -> None:
    hasher = BlockHasher("model", 4)
    ids = list(range(8))
    assert hasher.block_hashes(ids) == hasher.block_hashes(ids, salt=None)
    assert hasher.block_hashes(ids, salt="a") == hasher.block_hashes(ids, salt="a")
    assert not set(hasher.block_hashes(ids, salt="a")) & set(hasher.block_hashes(ids, salt="b"))
    assert not set(hasher.block_hashes(ids, salt="a")) & set(hasher.block_hashes(ids))


def test_contexts_share_blocks_only_within_one_salt(engine) -> None:
    first = turn(engine, "a1", "tenant-a")
    assert first.cached_tokens == 0
    other_tenant, no_salt = turn(engine, "b1", "tenant-b"), turn(engine, "n1", None)
    assert (other_tenant.cached_tokens, no_salt.cached_tokens) == (0, 0)  # not even a partial block
    same_tenant = turn(engine, "a2", "tenant-a", "Say bye.")
    assert same_tenant.cached_tokens >= 256
    assert other_tenant.text == first.text == no_salt.text  # a salt changes what is shared, not the reply


def test_agents_arriving_together_wait_only_for_their_own_tenant(engine) -> None:
    uids = {engine.submit(agent, f"{SYSTEM}\nSay hi.", max_tokens=2, cache_salt=salt): agent
            for agent, salt in (("a", "tenant-a"), ("b", "tenant-b"), ("a2", "tenant-a"))}
    cached = {uids[c.uid]: c.cached_tokens for c in engine.step()}
    assert cached["a"] == cached["b"] == 0 and cached["a2"] >= 256


def test_a_context_continues_only_with_the_salt_it_started_with(engine) -> None:
    blocks = turn(engine, "a", "tenant-a").blocks
    with pytest.raises(ValueError, match=r"started with cache_salt='tenant-a'.*got 'tenant-b'"):
        engine.submit("a", " More?", blocks, max_tokens=2, cache_salt="tenant-b")
    with pytest.raises(ValueError, match="cache_salt must be a string of 1 to 1024 characters"):
        engine.submit("c", "Hi", max_tokens=2, cache_salt="")
    uid = engine.submit("a", " More?", blocks, max_tokens=2, cache_salt="tenant-a")
    assert next(c for c in engine.step() if c.uid == uid).finish_reason in ("stop", "length")


def test_the_server_keeps_tenants_apart(server) -> None:
    def ask(salt: str, content: str) -> int:
        body = {"model": MODEL_ID, "max_tokens": 2, "cache_salt": salt,
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]}
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    assert ask("server-tenant-a", "Hi") == 0
    assert ask("server-tenant-b", "Hi") == 0
    assert ask("server-tenant-a", "Hello") >= 256
