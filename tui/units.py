"""Sizes in words for the screen: one unit, two or three significant digits; the pool in one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pool import PoolSnapshot

UNITS = ("B", "KiB", "MiB", "GiB")


def readable_bytes(num_bytes: int) -> str:
    """``16 KiB``, ``108 KiB``, ``1.5 MiB``: one decimal below 10 of a unit, none above (binary units)."""
    if num_bytes < 0:
        raise ValueError(f"num_bytes must be >= 0, got {num_bytes}")
    value = float(num_bytes)
    for unit in UNITS:
        if value < 1024 or unit == UNITS[-1]:
            break
        value /= 1024
    if unit == "B" or round(value, 1) >= 10:  # 9.99 KiB reads "10 KiB", not "10.0 KiB"
        return f"{value:.0f} {unit}"
    return f"{value:.1f} {unit}"


def pool_description(pool: PoolSnapshot) -> str:
    """One line for the header after the model's name: layers, blocks, their format and size.

    E.g. ``30 layers · 4,854 q8/g64 blocks × 256 tok, 108 KiB each``: sized to fit a
    120-column header beside the default model's name, so the pool's total bytes are
    left to the block pool panel's first line.
    """
    return (f"{pool.n_layers} layers · {pool.total_blocks:,} {pool.kv_format} blocks × {pool.block_tokens} tok, "
            f"{readable_bytes(pool.bytes_per_block)} each")
