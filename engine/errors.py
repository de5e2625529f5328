"""Exceptions the engine raises at its public boundary (the pool's are in ``pool.errors``)."""

from __future__ import annotations


class EngineClosed(RuntimeError):
    """A call that needs a live engine came after ``close()`` released it."""

    def __init__(self, call: str) -> None:
        self.call = call
        super().__init__(
            f"{call}() was called after close(): this engine is closed and steps or takes no more turns; "
            "build a new BlockPoolBatchEngine (with the same spill_dir, adopt() brings back the contexts "
            "close() saved)"
        )
