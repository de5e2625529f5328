"""Another CPU kind, emulated: under qemu-user an AVX2-only CPU (Haswell, AMD EPYC Rome)
traps on AVX-512 code, as the reporter's machine did on a SKYLAKEX-only OpenBLAS.

The probe's ``launcher`` runs its child under qemu, so these check what the probe would
decide on that CPU. Skipped where qemu-x86_64 is absent (``apt-get install qemu-user``).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.blas.cpu import read_cpu
from engine.blas.libraries import candidates
from engine.blas.probe import probe
from tests.blas_libraries import AVX512, build, clean_env, own

AVX2_ONLY_CPUS = ("Haswell", "EPYC-Rome")
QEMU = shutil.which("qemu-x86_64")
pytestmark = pytest.mark.skipif(platform.machine() != "x86_64" or QEMU is None,
                                reason="needs x86_64 and qemu-x86_64 (apt-get install qemu-user)")


def emulated(cpu: str) -> tuple[str, ...]:
    assert QEMU is not None
    return (QEMU, "-cpu", cpu)


@pytest.mark.parametrize("cpu", AVX2_ONLY_CPUS)
def test_avx512_code_is_rejected_on_an_avx2_only_cpu(tmp_path: Path, cpu: str) -> None:
    library = own(build(tmp_path, "avx512", AVX512, "-mavx512f"))
    verdict = probe(library, threads=1, launcher=emulated(cpu))
    assert not verdict.usable
    assert verdict.reason == "killed by SIGILL (Illegal instruction)"
    if "avx512f" in read_cpu().flags:  # the same library is fine where AVX-512 exists
        assert probe(library, threads=1).usable


@pytest.mark.parametrize("cpu", AVX2_ONLY_CPUS)
def test_the_dynamic_arch_openblas_passes_on_an_avx2_only_cpu(cpu: str) -> None:
    wheels = [lib for lib in candidates() if lib.source.endswith("wheel")]
    if not wheels:
        pytest.skip("the pinned OpenBLAS wheel is not installed")
    verdict = probe(wheels[0], threads=1, launcher=emulated(cpu))
    assert verdict.usable, verdict.reason
    assert "DYNAMIC_ARCH" in verdict.config


def test_mlx_matmul_on_the_fast_blas_under_emulation() -> None:
    """``import engine`` then an MLX matmul, all on an emulated Haswell: right numbers."""
    if not [lib for lib in candidates() if lib.source.endswith("wheel")]:
        pytest.skip("the pinned OpenBLAS wheel is not installed")
    script = ("import engine, mlx.core as mx, numpy as np; from engine import fastblas; "
              "a = mx.random.normal((64, 96)); b = mx.random.normal((96, 80)); "
              "err = np.abs(np.array(a @ b) - np.array(a).astype(np.float64) @ np.array(b)).max(); "
              "print(err < 1e-3, fastblas.loaded_library() is not None)")
    done = subprocess.run([*emulated("Haswell"), sys.executable, "-c", script], env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]
