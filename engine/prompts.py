"""What the engine checks at its boundary: its setup, and for ``submit``: prompts (tokenized as ``mlx_lm.generate`` does for a fresh
context), the cache a turn continues, and whether the context can fit the pool.

A continued turn (``cache=<blocks>``) is tokenized with no special tokens added: its
text goes into the middle of a context whose BOS is already at position 0, so a
tokenizer that adds ``<bos>`` (Gemma 3) must not add a second one there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pool import AgentBlocks, BlockPool, ModelCacheSpec


def encode_prompt(tokenizer: Any, prompt: str | Sequence[int], *, continues: bool = False) -> list[int]:
    """Token ids of ``prompt``; raises ValueError for an empty or invalid prompt."""
    if isinstance(prompt, str):
        ids = _encode_text(tokenizer, prompt, continues=continues)
    else:
        ids = list(prompt)
        vocab = len(tokenizer)
        bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt has {len(bad)} invalid token ids (first {bad[0]!r}); ids run 0..{vocab - 1}")
    if not ids:
        raise ValueError("prompt is empty: give some text or token ids")
    return ids


def _encode_text(tokenizer: Any, prompt: str, *, continues: bool) -> list[int]:
    if not prompt.strip():
        raise ValueError("prompt is empty or only whitespace: give some text or token ids")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"prompt is not valid Unicode text ({exc.reason} at index {exc.start}); "
            "remove the lone surrogate characters"
        ) from exc
    if continues:
        return list(tokenizer.encode(prompt, add_special_tokens=False))
    bos = tokenizer.bos_token  # mlx_lm.generate: add BOS unless the text already starts with it
    return list(tokenizer.encode(prompt, add_special_tokens=bos is None or not prompt.startswith(bos)))


def check_setup(pool: BlockPool, spec: ModelCacheSpec, model_key: str, *, max_batch_size: int,
                prefill_step_size: int) -> None:
    """ValueError for an engine setup that cannot work: another spec or model than the pool's."""
    if spec != pool.spec:
        raise ValueError(f"spec {spec!r} does not match the pool's spec {pool.spec!r}")
    if max_batch_size < 1 or prefill_step_size < 1:
        raise ValueError(
            f"max_batch_size ({max_batch_size}) and prefill_step_size ({prefill_step_size}) must be >= 1"
        )
    if model_key and pool.hasher.model_key not in ("", model_key):
        raise ValueError(
            f"the pool was built for model key {pool.hasher.model_key!r}, this model's is {model_key!r}; "
            "build the pool with model_key=engine.kv.spill.model_key(model) of the model it serves"
        )


SEED_LIMIT = 2**64  # mx.random.key takes an unsigned 64-bit seed
MAX_SALT_CHARS = 1024


def check_salt(cache_salt: object, cache: AgentBlocks | None) -> None:
    """ValueError for a ``cache_salt`` that is not a short string, or that differs from the one
    the continued context started with (its blocks were hashed from that one)."""
    if cache_salt is not None and (not isinstance(cache_salt, str) or not 0 < len(cache_salt) <= MAX_SALT_CHARS):
        raise ValueError(f"cache_salt must be a string of 1 to {MAX_SALT_CHARS} characters (or None), "
                         f"got {str(cache_salt)[:40]!r}")
    if cache is not None and cache.cache_salt != cache_salt:
        raise ValueError(f"agent {cache.agent_id!r}'s context started with cache_salt={cache.cache_salt!r}; "
                         f"continue it with the same salt, got {cache_salt!r}")


def check_request(agent_id: object, max_tokens: int, temperature: float, top_p: float,
                  seed: int | None = None) -> None:
    """ValueError for an agent id or sampling settings ``submit`` cannot use."""
    if not isinstance(agent_id, str) or not agent_id:
        raise ValueError(f"agent_id must be a non-empty string, got {agent_id!r}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT):
        raise ValueError(f"seed must be an int with 0 <= seed < 2**64 (or None: no seed), got {seed!r}")


def check_cache(pool: BlockPool, agent_id: str, cache: AgentBlocks) -> int:
    """The cached tokens of ``cache``; ValueError unless ``agent_id`` still holds all its blocks
    (alone or shared with others)."""
    if cache.agent_id != agent_id:
        raise ValueError(f"cache belongs to agent {cache.agent_id!r}, not {agent_id!r}")
    for block in cache.all_blocks():
        if not pool.holds(agent_id, block):
            raise ValueError(
                f"cache of agent {agent_id!r} holds block {block.block_id}, which the pool no longer "
                "gives that agent (freed or reused); submit with cache=None to start over"
            )
    return cache.total_tokens


def check_fits(spec: ModelCacheSpec, pool: BlockPool, context_tokens: int) -> None:
    """ValueError when a context of ``context_tokens`` could not fit even the whole pool."""
    needed = spec.blocks_for_context(context_tokens + 1)
    if needed > pool.total_blocks:
        raise ValueError(
            f"a context of {context_tokens} tokens needs {needed} blocks but the whole pool has "
            f"{pool.total_blocks}; shorten the prompt or give the pool more memory"
        )
