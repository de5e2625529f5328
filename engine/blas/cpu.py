"""What CPU this is: its name and instruction-set flags, read from /proc/cpuinfo.

The name and flags key the BLAS verdict cache (a library that ran on one CPU may trap on
another) and fill the doctor's CPU line. Nothing here imports numpy or MLX.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags a BLAS kernel choice depends on, as the doctor names them.
SIMD_FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "asimd": "NEON", "sve": "SVE", "sve2": "SVE2"}


@dataclass(frozen=True)
class CpuInfo:
    """One CPU kind: ``model`` for people, ``flags`` for the kernels."""

    model: str
    machine: str
    flags: frozenset[str]

    @property
    def key(self) -> str:
        """A short hash of model, machine and flags: changes when any of them does."""
        text = "\n".join([self.model, self.machine, " ".join(sorted(self.flags))])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def simd_names(self) -> list[str]:
        """The SIMD extensions present, e.g. ``['AVX2', 'FMA']`` (AVX-512 absent)."""
        return [name for flag, name in SIMD_FLAGS.items() if flag in self.flags]


def read_cpu(cpuinfo: Path = CPUINFO) -> CpuInfo:
    """This machine's CPU; fields that /proc/cpuinfo lacks (macOS, containers) stay empty."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() not in fields:  # the first processor speaks for all
            fields[name.strip().lower()] = value.strip()
    # x86 says "model name" and "flags"; aarch64 says "CPU implementer/part" and "Features".
    model = fields.get("model name") or _arm_model(fields) or platform.processor() or "unknown"
    flags = frozenset((fields.get("flags") or fields.get("features") or "").split())
    return CpuInfo(model=model, machine=platform.machine(), flags=flags)


def _arm_model(fields: dict[str, str]) -> str:
    implementer, part = fields.get("cpu implementer"), fields.get("cpu part")
    return f"implementer {implementer} part {part}" if implementer and part else ""
