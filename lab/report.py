"""Small helpers shared by the experiment reports: machine facts, tables, JSON files."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import mlx.core as mx

from engine import fastblas


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """Where and with what an experiment ran."""
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "mlx_device": str(mx.default_device()),
        "cpu_model": cpu_model(),
        "num_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "mlx": mx.__version__,
        "mlx_lm": package_version("mlx-lm"),
        "numpy": package_version("numpy"),
        "openblas_preloaded": fastblas.active(),
    }


def device_line(info: dict[str, Any]) -> str:
    """One human line naming the device, e.g. ``MLX Device(cpu, 0), CPU AMD EPYC (2 cores)``."""
    return f"MLX {info['mlx_device']}, CPU {info['cpu_model']} ({info['num_cpus']} cores)"


def machine_section(info: dict[str, Any]) -> str:
    """A Markdown bullet list of ``machine_info()``."""
    return "\n".join(f"- **{key}**: {value}" for key, value in info.items())


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; cells are str()-ed and pipes escaped."""

    def cells(row: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"

    lines = [cells(headers), "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend(cells(row) for row in rows)
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table for the terminal."""
    text_rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text_rows)) if text_rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    body = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in text_rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table; None (not measured) shows as a dash."""
    return "-" if value is None else f"{value:.{digits}f}"


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return path

