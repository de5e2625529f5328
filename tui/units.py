"""Sizes in words for the screen: one unit, two or three significant digits."""

from __future__ import annotations

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
