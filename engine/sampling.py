"""One sampler per request, so that a seed is that request's alone.

``mx.random.seed`` sets MLX's one global generator: seeding one request that way reseeds
every other request sampling beside it, and their draws reorder each other's. A seeded
request here draws from its own key (``mx.random.key(seed)``), split once per token, so
its text depends on its seed, prompt and settings only, not on who shares the batch.
Temperature and top-p mean what they mean in ``mlx_lm.sample_utils.make_sampler``.
"""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.sample_utils import Sampler, apply_top_p, make_sampler


class SeededSampler:
    """``make_sampler(temperature, top_p)``'s draw, from a key of its own split per call.

    Called with one sequence's log-probabilities (``[1, vocab]``): ``BatchGenerator`` calls
    each sequence's own sampler on its row when the batch's samplers differ.
    """

    def __init__(self, temperature: float, top_p: float, seed: int) -> None:
        assert temperature > 0, "greedy decoding needs no sampler"
        self.temperature = temperature
        self.top_p = top_p
        self._key = mx.random.key(seed)

    def __call__(self, logprobs: mx.array) -> mx.array:
        self._key, key = mx.random.split(self._key)
        if 0 < self.top_p < 1.0:
            logprobs = apply_top_p(logprobs, self.top_p)
        return mx.random.categorical(logprobs * (1.0 / self.temperature), key=key)


def request_sampler(temperature: float, top_p: float, seed: int | None) -> Sampler | None:
    """None for greedy decoding (the generator's argmax); mlx-lm's sampler on the global
    generator without a seed; a ``SeededSampler`` with one."""
    if temperature == 0:
        return None
    if seed is None:
        return make_sampler(temperature, top_p)
    return SeededSampler(temperature, top_p, seed)
