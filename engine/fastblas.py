"""Run MLX's CPU backend on a fast BLAS instead of the reference BLAS its Linux wheel bundles.

Measured (float32 512x576 @ 576x1536, one thread, see benchmarks/blas.md): the bundled
reference BLAS 3-8 GFLOP/s, the DYNAMIC_ARCH OpenBLAS 55-180. Prefill is matmul-bound,
so this is the difference between seconds and minutes for a long prompt.

This module is the front door the console scripts, ``make test`` and ``make bench`` use;
the work is in ``engine.blas`` (choice, probe, verdict cache, in-process load, preload).
``python -m engine.fastblas CMD...`` runs CMD with the chosen BLAS preloaded.
``BLOCKPOOL_FAST_BLAS=0`` opts out, ``BLOCKPOOL_BLAS_LIB`` names another library and
``BLOCKPOOL_BLAS_THREADS`` sets its threads.
"""

from __future__ import annotations

import os
import sys

from engine.blas.environment import without_preload
from engine.blas.process import (active, blas_env, current_choice, fallback_notes, load_in_process,
                                 loaded_library, mapped_blas_files, preloaded, reexec_if_needed)

__all__ = ["active", "blas_env", "current_choice", "fallback_notes", "load_in_process", "loaded_library", "main",
           "mapped_blas_files", "preloaded", "reexec_if_needed"]


def main(argv: list[str] | None = None) -> None:
    """``python -m engine.fastblas CMD [ARGS...]``: run CMD with the chosen BLAS preloaded."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m engine.fastblas CMD [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    env = {**without_preload(os.environ), **(blas_env() or {})}
    os.execvpe(args[0], args, env)


if __name__ == "__main__":
    main()
