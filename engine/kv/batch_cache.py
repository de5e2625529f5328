"""mlx-lm caches that carry a context into ``BatchGenerator`` and back out without copying it.

mlx-lm's ``KVCache.merge`` copies each context into a batch cache of exactly its length,
so the first prompt token copies it again to grow; ``PromptProcessingBatch.split`` takes
its row (a third copy) and ``BatchKVCache.extract`` makes it contiguous (a fourth). For a
2,000-token float32 SmolLM2 context (95 MiB) those copies were 90-400 ms of a warm turn
(``benchmarks/warm_phases.md``). Here a request that is alone in its batch keeps one
buffer per layer for K and one for V, with room to grow, from the gather (or the hot set)
to the end of its turn: ``merge`` wraps it, ``filter`` keeps it, ``extract`` hands it back.

MLX updates a slice in place only when nothing else refers to the buffer (a view or a
second reference makes every update a full copy, measured 16 us vs 860 us on 50 MB), so
ownership is handed on, never shared: ``adopt`` takes the buffers out of the cache it wraps.
With several requests in one batch the copies mlx-lm makes stay (their rows must be packed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import BatchKVCache, KVCache, create_attention_mask

STEP = KVCache.step  # mlx-lm grows caches in steps of 256 tokens; so do we


def capacity(num_tokens: int) -> int:
    """Tokens a buffer holding ``num_tokens`` is allocated for: the next whole step."""
    return max(STEP, -(-num_tokens // STEP) * STEP)


def with_room(keys: mx.array, values: mx.array, used: int, num_tokens: int) -> tuple[mx.array, mx.array]:
    """Buffers holding the first ``used`` tokens of ``keys``/``values`` with room for ``num_tokens``."""
    batch, heads, _, k_dim = keys.shape
    size = capacity(num_tokens)
    return (mx.concatenate([keys[..., :used, :], mx.zeros((batch, heads, size - used, k_dim), keys.dtype)], axis=2),
            mx.concatenate([values[..., :used, :], mx.zeros((batch, heads, size - used, values.shape[3]),
                                                             values.dtype)], axis=2))


class PagedKVCache(KVCache):
    """One sequence's cache whose buffers may be longer than ``offset`` (room to grow).

    ``expected_tokens``: how long the context will get this turn, so a fresh cache grows
    once to that size instead of once per 256 tokens.
    """

    def __init__(self, expected_tokens: int = 0) -> None:
        super().__init__()
        self.expected_tokens = expected_tokens

    @classmethod
    def holding(cls, keys: mx.array, values: mx.array, offset: int) -> PagedKVCache:
        """A cache over ``keys``/``values`` (``[1, H, >= offset, D]``, each its own buffer)."""
        cache = cls()
        cache.keys, cache.values, cache.offset = keys, values, offset
        return cache

    @classmethod
    def merge(cls, caches: Sequence[Any]) -> BatchKVCache:
        if len(caches) == 1 and isinstance(caches[0], KVCache):
            return PagedBatchKVCache.adopt(caches[0])
        return PagedBatchKVCache.merge(caches)


class PagedBatchKVCache(BatchKVCache):
    """``BatchKVCache`` that wraps a lone sequence's buffers instead of copying them."""

    def __init__(self, left_padding: list[int], expected_tokens: int = 0) -> None:
        super().__init__(left_padding)
        self.expected_tokens = expected_tokens
        # One sequence, no padding: it attends as a plain KVCache does (``make_mask``). Kept on
        # the host, so checking it never waits for the device.
        self.lone = len(left_padding) == 1 and not left_padding[0]

    @classmethod
    def adopt(cls, cache: KVCache) -> PagedBatchKVCache:
        """A batch of one over ``cache``'s own buffers; ``cache`` lets go of them."""
        batch = cls([0], getattr(cache, "expected_tokens", 0))
        if cache.keys is not None:
            batch.keys, batch.values = cache.keys, cache.values
            batch.offset = mx.array([cache.offset])
            batch._idx = cache.offset
        cache.keys = cache.values = None  # a second reference would turn every update into a copy
        return batch

    @classmethod
    def merge(cls, caches: Sequence[Any]) -> PagedBatchKVCache:
        """Several sequences left-padded into one batch (one copy each, into room to grow)."""
        lengths = [c.size() for c in caches]
        longest = max(lengths)
        expected = max(getattr(c, "expected_tokens", 0) for c in caches)
        padding = [longest - n for n in lengths]
        batch = cls(padding, expected)
        filled = [c for c in caches if c.keys is not None and c.size()]
        if not filled:
            return batch
        _, heads, _, k_dim = filled[0].keys.shape
        v_dim = filled[0].values.shape[3]
        size = capacity(max(longest + 1, expected))
        keys = mx.zeros((len(caches), heads, size, k_dim), dtype=filled[0].keys.dtype)
        values = mx.zeros((len(caches), heads, size, v_dim), dtype=filled[0].values.dtype)
        for i, (pad, n, c) in enumerate(zip(padding, lengths, caches)):
            if n:
                keys[i : i + 1, :, pad : pad + n] = c.keys[..., :n, :]
                values[i : i + 1, :, pad : pad + n] = c.values[..., :n, :]
            c.keys = c.values = None
        batch.keys, batch.values = keys, values
        batch.offset = mx.array(lengths)
        batch._idx = longest
        batch.lone = len(caches) == 1
        return batch

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        prev, count = self._idx, keys.shape[2]
        if self.keys is None or prev + count > self.keys.shape[2]:
            self._grow(keys, values, max(prev + count, self.expected_tokens))
        self.offset = self.offset + count
        self._idx += count
        self.keys[..., prev : self._idx, :] = keys
        self.values[..., prev : self._idx, :] = values
        return self.keys[..., : self._idx, :], self.values[..., : self._idx, :]

    def _grow(self, keys: mx.array, values: mx.array, num_tokens: int) -> None:
        batch, heads, _, k_dim = keys.shape
        size = capacity(num_tokens)
        if self.keys is None:
            self.keys = mx.zeros((batch, heads, size, k_dim), dtype=keys.dtype)
            self.values = mx.zeros((batch, heads, size, values.shape[3]), dtype=values.dtype)
            return
        self.keys, self.values = with_room(self.keys, self.values, self._idx, size)

    def filter(self, batch_indices: Sequence[int]) -> None:
        """Keep the given rows; keeping every row in order keeps the buffers themselves."""
        if list(batch_indices) == list(range(self.offset.shape[0])):
            return
        super().filter(batch_indices)
        self.lone = len(batch_indices) == 1  # the filter shifted its left padding away

    def extend(self, other: BatchKVCache) -> None:
        super().extend(other)
        self.lone = False

    def prepare(self, *, left_padding: list[int] | None = None, lengths: list[int] | None = None,
                right_padding: list[int] | None = None) -> None:
        super().prepare(left_padding=left_padding, lengths=lengths, right_padding=right_padding)
        if any(left_padding or ()) or any(right_padding or ()):
            self.lone = False

    def make_mask(self, N: int, return_array: bool = False, **kwargs: Any) -> Any:
        """A lone sequence's mask as mlx-lm's ``KVCache`` makes it (none for one token, the
        fused kernel's "causal" for more), so it attends exactly as ``mlx_lm.generate`` does."""
        if self.lone and kwargs.get("window_size") is None:
            return create_attention_mask(N, offset=self._idx, return_array=return_array, window_size=None)
        return super().make_mask(N, return_array=return_array, **kwargs)

    def extract(self, idx: int) -> KVCache:
        """Row ``idx`` as a single-sequence cache: the buffers themselves when the batch is
        this one sequence (it is leaving the batch), else a copy with room to grow."""
        mx.eval(self.left_padding)
        padding = self.left_padding.tolist()[idx]
        if self.keys is None:
            return PagedKVCache()
        if self.keys.shape[0] == 1 and padding == 0:
            return PagedKVCache.holding(self.keys, self.values, self._idx)
        num_tokens = self._idx - padding
        room = [(0, 0), (0, 0), (0, capacity(num_tokens + 1) - num_tokens), (0, 0)]
        keys = mx.pad(self.keys[idx : idx + 1, :, padding : self._idx], room)
        values = mx.pad(self.values[idx : idx + 1, :, padding : self._idx], room)
        return PagedKVCache.holding(keys, values, num_tokens)


def cache_arrays(cache: Any) -> tuple[mx.array, mx.array]:
    """``[H, T, D]`` K/V of an extracted single-sequence cache, in temporal order (evaluated)."""
    keys, values = cache.keys, cache.values
    if isinstance(cache, KVCache):
        keys, values = keys[..., : cache.offset, :], values[..., : cache.offset, :]
    mx.eval(keys, values)
    # squeeze, not [0]: integer indexing is a gather in MLX, a copy of the whole context.
    return keys.squeeze(0), values.squeeze(0)
