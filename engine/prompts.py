"""What ``submit`` checks: prompts (tokenized as ``mlx_lm.generate`` does for a fresh
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


def check_cache(pool: BlockPool, agent_id: str, cache: AgentBlocks) -> int:
    """The cached tokens of ``cache``; ValueError unless the pool still gives all its blocks to ``agent_id``."""
    if cache.agent_id != agent_id:
        raise ValueError(f"cache belongs to agent {cache.agent_id!r}, not {agent_id!r}")
    for block in cache.all_blocks():
        if pool.owner_of(block.block_id) != agent_id:
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
