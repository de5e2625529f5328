"""Matmul GFLOP/s of the chosen BLAS against MLX's bundled one, each in its own child
process of the same run (a process cannot swap its BLAS once MLX has loaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .choice import Choice
from .environment import preload_vars, without_preload

CHILD = Path(__file__).with_name("_matmul_child.py")
# The reference shape: one layer's MLP-sized matmul of a 512-token prefill.
SHAPE = (512, 576, 1536)


@dataclass(frozen=True)
class MatmulRate:
    """One timing: ``gflops`` over ``runs`` matmuls, with the BLAS files the child had mapped."""

    gflops: float
    median_s: float
    runs: int
    blas_files: tuple[str, ...]


class MeasureError(RuntimeError):
    """The timing child failed; the message holds its exit status and last stderr line."""


def matmul_rate(env: dict[str, str], *, shape: tuple[int, int, int] = SHAPE, min_time_s: float = 0.5,
                timeout_s: float = 300.0) -> MatmulRate:
    """Time ``shape`` (m, k, n) in a child process with environment ``env``."""
    m, k, n = shape
    done = subprocess.run([sys.executable, "-I", str(CHILD), str(m), str(k), str(n), str(min_time_s)], env=env,
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise MeasureError(f"the matmul timing child exited {done.returncode}: {last}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return MatmulRate(float(data["gflops"]), float(data["median_s"]), int(data["runs"]), tuple(data["blas_files"]))


def chosen_env(choice: Choice) -> dict[str, str]:
    """An environment that preloads ``choice``'s library (bundled when it has none)."""
    env = bundled_env(threads=choice.threads)
    return env if choice.library is None else {**env, **preload_vars(choice.library, env, choice.threads)}


def bundled_env(*, threads: int = 1) -> dict[str, str]:
    """This environment without any BLAS we preloaded: MLX falls back to its bundled one."""
    return {**without_preload(os.environ), "OPENBLAS_NUM_THREADS": str(threads)}
