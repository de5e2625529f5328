"""Every ``BLOCKPOOL_*`` environment variable blockpool reads: its name, what it does, how it is read.

Stdlib only, so ``engine.blas`` can read it before MLX loads. The front ends' settings
(``blockpool-tui``'s ``BLOCKPOOL_<NAME>``, ``blockpool serve``'s ``BLOCKPOOL_SERVE_<NAME>``)
are read by their settings models (``frontend.settings``) under the prefixes named here.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = "BLOCKPOOL_CACHE_DIR"  # converted models and BLAS verdicts (default: the user cache folder)
DATA_DIR = "BLOCKPOOL_DATA_DIR"  # sessions.db and spill files (default: the user data folder)
CONFIG = "BLOCKPOOL_CONFIG"  # the TOML config file (default: ~/.config/blockpool/config.toml)
FAST_BLAS = "BLOCKPOOL_FAST_BLAS"  # "0": MLX's bundled BLAS, no probe, no preload
BLAS_LIB = "BLOCKPOOL_BLAS_LIB"  # another library exporting cblas_sgemm, probed like the pinned one
BLAS_THREADS = "BLOCKPOOL_BLAS_THREADS"  # the BLAS's threads (default 1)
KV_KERNEL = "BLOCKPOOL_KV_KERNEL"  # "numpy": dequantize without the fused kernel (engine/kv/host_dequant.py)
# Set by blockpool for its own child processes:
BLAS_PRELOADED = "BLOCKPOOL_BLAS_PRELOADED"  # the LD_PRELOAD entry blockpool added, so it can take it out
BLAS_WARNED = "BLOCKPOOL_BLAS_WARNED"  # libraries already reported on stderr: children stay quiet
# Prefixes of the front ends' settings (one variable per setting):
TUI_PREFIX = "BLOCKPOOL_"  # blockpool-tui: BLOCKPOOL_MODEL, BLOCKPOOL_MAX_TOKENS, ...
SERVE_PREFIX = "BLOCKPOOL_SERVE_"  # blockpool serve: BLOCKPOOL_SERVE_PORT, ...


def text(name: str) -> str | None:
    """The variable's value, or None when it is unset or empty."""
    return os.environ.get(name) or None


def path(name: str) -> Path | None:
    """The variable as a path (``~`` expanded), or None when it is unset or empty."""
    value = text(name)
    return Path(value).expanduser() if value is not None else None


def fast_blas_opted_out() -> bool:
    """``BLOCKPOOL_FAST_BLAS=0``: run on MLX's bundled BLAS."""
    return os.environ.get(FAST_BLAS) == "0"
