"""MLX's allocator cache limit on the CPU backend, raised while an engine lives."""

from __future__ import annotations

import os

import mlx.core as mx

_CPU_CACHE_LIMIT_BYTES = 1 << 30


def _half_of_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):  # not POSIX: no cap beyond the request
        return 1 << 62


def default_hot_bytes(float_nbytes: int) -> int:
    """The hot set's default budget: as much as the pool holds as floats, at most a quarter
    of the machine's memory (each entry duplicates an idle context's blocks)."""
    return min(float_nbytes, _half_of_memory() // 2)


class CacheLimit:
    """Keeps MLX's buffer cache able to hold two of the largest gathers (CPU only), until ``restore``.

    A gather's buffers must come back from MLX's allocator cache: fresh pages cost 2.8x (16K)
    to 5x (32K) the copy itself (EXP-006), and a cache only the size of one gather was
    crowded out by other freed buffers at 8K (4x a copy, measured). ``gather_bytes`` is the
    float size of the whole pool (quantized pools gather 2-7x their own bytes); the limit
    stays under half the machine's memory.
    """

    def __init__(self, gather_bytes: int) -> None:
        self._previous: int | None = None
        if mx.default_device().type != mx.DeviceType.cpu:
            return
        limit = max(_CPU_CACHE_LIMIT_BYTES, min(2 * gather_bytes, _half_of_memory()))
        previous = mx.set_cache_limit(limit)
        if previous > limit:
            mx.set_cache_limit(previous)
        else:
            self._previous = previous

    def restore(self) -> None:
        if self._previous is not None:
            mx.set_cache_limit(self._previous)
            self._previous = None
