"""``blockpool doctor``: the facts of a bug report, exit 0 when usable, 1 with the reason."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

from engine import fastblas
from engine.blas.choice import OPT_OUT_ENV
from engine.blas.libraries import LIB_ENV
from tests.blas_libraries import BIN, TRAP, build, clean_env


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "blockpool"), "doctor", *args], env=clean_env(**env), capture_output=True,
                          text=True, timeout=300)


def labels(stdout: str) -> set[str]:
    return {line.split("  ")[0].strip() for line in stdout.splitlines() if line.strip()}


def test_doctor_on_this_machine() -> None:
    choice = fastblas.current_choice()
    if choice.library is None:
        pytest.skip(f"no usable fast BLAS here: {choice.reason}")
    done = doctor()
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"mlx", "cpu", "blas", "matmul", "models", "sessions", "spill", "optional", "kv dequantize"} <= labels(done.stdout)
    assert "float32: numba; float16: numba" in done.stdout  # the kernel passed its probe on this CPU
    assert "OK: everything blockpool needs is usable" in done.stdout
    assert "verdict: probed ok" in done.stdout and "threads: " in done.stdout
    assert "GFLOP/s vs bundled" in done.stdout
    flags = "AVX2:" if platform.machine() == "x86_64" else "NEON:"
    assert flags in done.stdout


def test_doctor_names_a_rejected_blas_and_exits_1(tmp_path: Path) -> None:
    library = build(tmp_path, "trap", TRAP)
    done = doctor("--no-measure", **{LIB_ENV: str(library)})
    assert done.returncode == 1, done.stdout
    rejected = [line for line in done.stdout.splitlines() if line.startswith("blas rejected")]
    assert len(rejected) == 1 and str(library) in rejected[0] and "killed by SIG" in rejected[0]
    assert "NOT OK: MLX runs on its slow bundled BLAS" in done.stdout


def test_doctor_accepts_an_opt_out() -> None:
    done = doctor("--no-measure", **{OPT_OUT_ENV: "0"})
    assert done.returncode == 0, done.stdout
    assert "BLOCKPOOL_FAST_BLAS=0 (opted out)" in done.stdout


def test_doctor_names_the_numpy_dequantize_fallback() -> None:
    done = doctor("--no-measure", BLOCKPOOL_KV_KERNEL="numpy")
    assert done.returncode == 0, done.stdout
    line = next(line for line in done.stdout.splitlines() if line.startswith("kv dequantize"))
    assert "float32: numpy (BLOCKPOOL_KV_KERNEL=numpy)" in line, line
