"""The probe judges a BLAS in a child process: a trap or a wrong answer is rejected with
one stderr line, the product carries on with MLX's bundled BLAS and never crashes."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from engine.blas.cpu import read_cpu
from engine.blas.libraries import LIB_ENV, candidates
from engine.blas.probe import probe
from tests.blas_libraries import BIN, TRAP, WRONG, build, clean_env, own, warnings_about

def test_probe_rejects_a_library_that_traps(tmp_path: Path) -> None:
    verdict = probe(own(build(tmp_path, "trap", TRAP)), threads=1)
    assert not verdict.usable
    assert verdict.reason.startswith("killed by SIG"), verdict.reason  # SIGILL on x86_64, SIGTRAP on arm


def test_probe_rejects_a_library_that_answers_wrongly(tmp_path: Path) -> None:
    verdict = probe(own(build(tmp_path, "wrong", WRONG)), threads=1)
    assert not verdict.usable
    assert "wrong answer: max error 1" in verdict.reason


def test_probe_rejects_a_file_that_does_not_load(tmp_path: Path) -> None:
    junk = tmp_path / "libjunk.so"
    junk.write_bytes(b"not an ELF file")
    verdict = probe(own(junk), threads=1)
    assert not verdict.usable
    assert "cannot load" in verdict.reason and "libjunk.so" in verdict.reason


def test_probe_accepts_the_pinned_openblas() -> None:
    """x86_64's DYNAMIC_ARCH wheel runs on every x86_64 CPU; aarch64's needs SVE2."""
    found = [lib for lib in candidates() if lib.source.endswith("wheel")]
    if not found:
        pytest.skip(f"no pinned OpenBLAS wheel on {sys.platform}/{platform.machine()}")
    if platform.machine() == "aarch64" and "sve2" not in read_cpu().flags:
        pytest.skip("cmeel's aarch64 OpenBLAS is a NEOVERSEN2 build; this CPU has no SVE2")
    verdict = probe(found[0], threads=1)
    assert verdict.usable, verdict.reason
    assert verdict.config.startswith("OpenBLAS 0.3."), verdict.config
    if platform.machine() == "x86_64":
        assert "DYNAMIC_ARCH" in verdict.config


def test_demo_survives_a_trapping_blas_with_one_warning(tmp_path: Path) -> None:
    library = build(tmp_path, "trap", TRAP)
    done = subprocess.run([str(BIN / "blockpool"), "demo", "--agents", "1", "--max-tokens", "8"],
                          env=clean_env(**{LIB_ENV: str(library)}), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pool after the demo" in done.stdout
    lines = warnings_about(done.stderr, library)
    assert len(lines) == 1, done.stderr
    assert "failed its probe" in lines[0] and "bundled reference BLAS instead (slower)" in lines[0]


def test_a_wrong_answer_blas_never_reaches_mlx(tmp_path: Path) -> None:
    """Rejected the same way, and checked where it would show (``import engine`` then an
    MLX matmul): the answer stays right, so the library never got into the process."""
    library = build(tmp_path, "wrong", WRONG)
    script = "import engine, mlx.core as mx; print(float((mx.ones((64, 64)) @ mx.ones((64, 64)))[0, 0]))"
    done = subprocess.run([sys.executable, "-c", script], env=clean_env(**{LIB_ENV: str(library)}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "64.0"
    assert len(warnings_about(done.stderr, library)) == 1, done.stderr
