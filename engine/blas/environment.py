"""The environment variables that put a BLAS into a new process, or keep it out."""

from __future__ import annotations

from collections.abc import Mapping

from engine.env import BLAS_PRELOADED as PRELOADED_ENV

from .libraries import Library


def without_preload(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` minus the BLAS we preloaded into it; other LD_PRELOAD entries stay."""
    clean = dict(env)
    if ours := clean.pop(PRELOADED_ENV, None):
        clean["LD_PRELOAD"] = ":".join(p for p in split(clean.get("LD_PRELOAD")) if p != ours)
    return clean


def loadable_vars(library: Library, base: Mapping[str, str], threads: int) -> dict[str, str]:
    """What a process needs to load ``library`` itself: its link folder, its thread count."""
    dirs = [str(d) for d in library.library_dirs] + split(base.get("LD_LIBRARY_PATH"))
    return {"LD_LIBRARY_PATH": ":".join(dirs), "OPENBLAS_NUM_THREADS": str(threads)}


def preload_vars(library: Library, base: Mapping[str, str], threads: int) -> dict[str, str]:
    """What makes a new process start with ``library`` preloaded (``base`` already clean)."""
    load_path = str(library.load_path)
    return {**loadable_vars(library, base, threads), PRELOADED_ENV: load_path,
            "LD_PRELOAD": ":".join([load_path, *split(base.get("LD_PRELOAD"))])}


def split(value: str | None) -> list[str]:
    """A colon-separated path list, empty entries dropped."""
    return [p for p in (value or "").split(":") if p]
