"""Where blockpool keeps its converted models, and where packaged model files live."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

CACHE_DIR_ENV = "BLOCKPOOL_CACHE_DIR"


def cache_dir() -> Path:
    """The user cache folder: `$BLOCKPOOL_CACHE_DIR`, else `$XDG_CACHE_HOME/blockpool`,
    else the platform default (`~/Library/Caches/blockpool` on macOS, `~/.cache/blockpool`)."""
    if explicit := os.environ.get(CACHE_DIR_ENV):
        return Path(explicit).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "blockpool"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "blockpool"
    return Path.home() / ".cache" / "blockpool"


def converted_models_dir() -> Path:
    """Folder holding one mlx-lm model directory per (source file, dtype)."""
    return cache_dir() / "models"


def assembled_gguf_dir() -> Path:
    """Folder for GGUF files that a package ships in chunks and we join once."""
    return cache_dir() / "gguf"


def package_data_file(package: str, filename: str) -> Path | None:
    """`filename` inside the installed `package`, or None when either is missing.

    Uses `find_spec`, which locates the package without importing it: the
    embedded SmolLM2 package imports `llm`/`llama_cpp`, which we do not install.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / filename
        if candidate.is_file():
            return candidate
    return None
