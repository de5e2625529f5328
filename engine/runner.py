"""A thin runner over mlx-lm's ``BatchGenerator``: insert, step, remove, start over.

``BatchGenerator`` does the batching (continuous batching, left-padded batch caches,
chunked prefill); the runner only keeps the engine's settings in one place and gives
the step loop the few calls it needs, as nano-vllm's ``ModelRunner`` does for its model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator
from mlx_lm.sample_utils import Sampler

DEFAULT_PREFILL_STEP = 512


class ModelRunner:
    def __init__(self, model: Any, eos_token_ids: Sequence[int], *, max_batch_size: int,
                 prefill_step_size: int) -> None:
        self.model = model
        self.eos_token_ids = sorted(eos_token_ids)
        self.max_batch_size = max_batch_size
        self.prefill_step_size = prefill_step_size
        self._gen = self._new_generator()

    def _new_generator(self) -> BatchGenerator:
        return BatchGenerator(
            self.model,
            stop_tokens=[[t] for t in self.eos_token_ids],
            completion_batch_size=self.max_batch_size,
            prefill_batch_size=self.max_batch_size,
            prefill_step_size=self.prefill_step_size,
        )

    def insert(self, prompt_ids: list[int], *, max_tokens: int, cache: list, context_ids: list[int],
               sampler: Sampler | None) -> int:
        """Queue one sequence that continues ``cache`` (holding ``context_ids``; the generator's
        from now on: ``engine.kv.batch_cache``), sampling with ``sampler`` (None: greedy); returns its uid."""
        (uid,) = self._gen.insert(
            [prompt_ids], max_tokens=[max_tokens], caches=[cache], all_tokens=[context_ids], samplers=[sampler],
        )
        return uid

    def first_token(self, prompt_ids: list[int], cache: list, *, sampler: Sampler | None) -> int:
        """Read a short prompt into ``cache`` in one forward pass and sample its first token.

        ``BatchGenerator`` takes two passes (the prompt but its last token, then that token
        alone), and on a CPU each pass reads all the weights again: one pass fewer is a
        decode step off a warm turn's time to first token. ``cache`` (one sequence) then
        holds the prompt; the token goes on through ``insert`` (or ``feed``)."""
        with mx.stream(self._gen.stream):
            logits = self.model(mx.array(prompt_ids)[None], cache=cache)[:, -1, :]
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            token = sampler(logprobs) if sampler is not None else mx.argmax(logprobs, axis=-1)
            mx.eval(token)
        return int(token.item())

    def feed(self, token: int, cache: list) -> None:
        """Put a last token's K/V into ``cache`` (a turn that ends at its first token keeps it)."""
        with mx.stream(self._gen.stream):
            self.model(mx.array([[token]]), cache=cache)
            mx.eval([(c.keys, c.values) for c in cache])

    def step(self) -> tuple[list[Any], list[Any]]:
        """One batched step: (prefill progress responses, generated-token responses). May raise."""
        return self._gen.next()

    def remove(self, uid: int, *, keep: bool) -> tuple[list | None, list[int] | None]:
        """Take a sequence out of the batch; with ``keep``, its caches and token ids."""
        extracted = self._gen.remove([uid], return_prompt_caches=keep)
        return extracted.get(uid, (None, None))

    def context_rows(self, uid: int, start: int, stop: int) -> list[tuple[mx.array, mx.array]] | None:
        """Tokens ``[start, stop)`` of a running sequence's context, per layer ``[H, n, D]`` K and V:
        views into the batch cache (evaluated; drop them before the next step, which updates
        that cache in place). None while the sequence waits to start. Global layers only: a
        sliding layer's rotating buffer has no fixed token order."""
        found = self._gen._find_uids([uid]).get(uid)  # mlx-lm's own lookup (pinned to 0.32)
        if found is None or found[0] == 0:
            return None
        stage, row = found
        batch = self._gen._prompt_batch if stage == 1 else self._gen._generation_batch
        out = []
        for cache in batch.prompt_cache:
            pad = int(cache.left_padding[row].item())
            out.append((cache.keys[row, :, pad + start : pad + stop], cache.values[row, :, pad + start : pad + stop]))
        mx.eval(out)
        return out

    def reset(self) -> None:
        """Start over with an empty batch (after a model error)."""
        self._gen = self._new_generator()
