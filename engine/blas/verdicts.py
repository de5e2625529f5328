"""The probe's verdicts, remembered per library file and CPU so a normal start probes nothing.

One JSON file in the user cache folder holds one entry per library path; an entry counts
only while the file's size and mtime and the CPU's model and flags are what they were.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.paths import cache_dir

from .cpu import CpuInfo
from .probe import Verdict

FORMAT_VERSION = 1


def verdict_file() -> Path:
    return cache_dir() / "blas" / "verdicts.json"


def identity(library_path: Path, cpu: CpuInfo) -> str:
    """What a verdict depends on: the file (path, size, mtime) and the CPU kind."""
    stat = library_path.stat()
    return f"{library_path}|{stat.st_size}|{stat.st_mtime_ns}|{cpu.key}"


class VerdictCache:
    """Read and write remembered verdicts; a missing or damaged file just means 'probe again'."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else verdict_file()

    def get(self, library_path: Path, cpu: CpuInfo) -> Verdict | None:
        entry = self._entries().get(str(library_path))
        try:
            if entry is None or entry.get("identity") != identity(library_path, cpu):
                return None
            return Verdict.from_json(entry["verdict"])
        except (OSError, KeyError, TypeError, ValueError):
            return None

    def put(self, library_path: Path, cpu: CpuInfo, verdict: Verdict) -> None:
        """Remember ``verdict``, replacing any older one for the same path."""
        # Entries of deleted files (a test's temporary library, an old wheel) go too.
        entries = {path: entry for path, entry in self._entries().items() if Path(path).exists()}
        entries[str(library_path)] = {"identity": identity(library_path, cpu), "verdict": verdict.to_json()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"version": FORMAT_VERSION, "entries": entries}, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)  # atomic: a concurrent start reads the old or the new file
        except OSError:
            pass  # a read-only cache costs a probe per start, nothing worse

    def _entries(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}
