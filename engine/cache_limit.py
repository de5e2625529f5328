"""MLX's allocator cache limit on the CPU backend, raised while an engine lives."""

from __future__ import annotations

import mlx.core as mx

_CPU_CACHE_LIMIT_BYTES = 1 << 30


class CacheLimit:
    """Keeps MLX's buffer cache at least as large as the slab (CPU only), until ``restore``.

    A gather's buffers must come back from MLX's allocator cache: below the size of a
    gather, fresh pages cost 2.8x (16K) to 5x (32K) the copy itself (EXP-006).
    """

    def __init__(self, slab_bytes: int) -> None:
        self._previous: int | None = None
        if mx.default_device().type != mx.DeviceType.cpu:
            return
        limit = max(_CPU_CACHE_LIMIT_BYTES, slab_bytes)
        previous = mx.set_cache_limit(limit)
        if previous > limit:
            mx.set_cache_limit(previous)
        else:
            self._previous = previous

    def restore(self) -> None:
        if self._previous is not None:
            mx.set_cache_limit(self._previous)
            self._previous = None
