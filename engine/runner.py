"""A thin runner over mlx-lm's ``BatchGenerator``: insert, step, remove, start over.

``BatchGenerator`` does the batching (continuous batching, left-padded batch caches,
chunked prefill); the runner only keeps the engine's settings in one place and gives
the step loop the few calls it needs, as nano-vllm's ``ModelRunner`` does for its model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlx_lm.generate import BatchGenerator
from mlx_lm.sample_utils import make_sampler

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
               temperature: float, top_p: float) -> int:
        """Queue one sequence that continues ``cache`` (holding ``context_ids``; the generator's
        from now on: ``engine.kv.batch_cache``); returns its uid."""
        sampler = None if temperature == 0 else make_sampler(temperature, top_p)
        (uid,) = self._gen.insert(
            [prompt_ids], max_tokens=[max_tokens], caches=[cache], all_tokens=[context_ids], samplers=[sampler],
        )
        return uid

    def step(self) -> tuple[list[Any], list[Any]]:
        """One batched step: (prefill progress responses, generated-token responses). May raise."""
        return self._gen.next()

    def remove(self, uid: int, *, keep: bool) -> tuple[list | None, list[int] | None]:
        """Take a sequence out of the batch; with ``keep``, its caches and token ids."""
        extracted = self._gen.remove([uid], return_prompt_caches=keep)
        return extracted.get(uid, (None, None))

    def reset(self) -> None:
        """Start over with an empty batch (after a model error)."""
        self._gen = self._new_generator()
