"""How a process gets the fast BLAS: ``import engine`` loads it before MLX; MLX first
gets one warning; a parent's preload that disagrees with the child's choice is dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import fastblas
from engine.blas.choice import OPT_OUT_ENV, WARNED_ENV
from engine.blas.libraries import LIB_ENV
from tests.blas_libraries import BIN, TRAP, build, clean_env, warnings_about

MAPPED_BLAS = ("import json; from pathlib import Path; "
               "print(json.dumps(sorted({l.split()[-1] for l in Path('/proc/self/maps').read_text().splitlines() "
               "if 'openblas' in l})))")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=clean_env(**env), capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def wheel_blas() -> None:
    """Skip where no fast BLAS passes its probe (the product then says so itself)."""
    choice = fastblas.current_choice()
    if choice.library is None:
        pytest.skip(f"no usable fast BLAS here: {choice.reason}")


def test_import_engine_loads_the_fast_blas_before_mlx(wheel_blas: None) -> None:
    done = run_python(f"import engine, mlx.core; {MAPPED_BLAS}")
    assert done.returncode == 0, done.stderr
    assert any("libopenblas" in path for path in json.loads(done.stdout)), done.stdout
    assert done.stderr == ""


def test_mlx_imported_first_warns_once(wheel_blas: None) -> None:
    done = run_python(f"import mlx.core, engine, engine.fastblas; {MAPPED_BLAS}; "
                      "print(json.dumps(engine.fastblas.fallback_notes()))")
    assert done.returncode == 0, done.stderr
    mapped, notes = map(json.loads, done.stdout.splitlines())
    assert mapped == []
    assert done.stderr.count("MLX was imported before engine") == 1, done.stderr
    assert [note[:36] for note in notes] == ["MLX was imported before engine, so i"]  # what the TUI shows


def test_the_tui_shows_the_fallback_warning_that_stderr_showed(tmp_path: Path) -> None:
    """blockpool-tui hides stderr, so the app takes the process's notes (MLX not loaded yet);
    a re-executed child, told the library was warned about, stays quiet but still knows."""
    library = build(tmp_path, "trap", TRAP)
    code = ("import json, sys; from tui.app import BlockpoolApp; print(json.dumps(BlockpoolApp().blas_notes)); "
            "sys.exit('mlx.core' in sys.modules)")
    env = {LIB_ENV: str(library), "BLOCKPOOL_CONFIG": str(tmp_path / "absent.toml")}
    first = run_python(code, **env)
    assert first.returncode == 0, first.stderr
    (warned,) = warnings_about(first.stderr, library)
    assert json.loads(first.stdout) == [warned.removeprefix("blockpool: ")]
    child = run_python(code, **env, **{WARNED_ENV: str(library)})
    assert child.returncode == 0 and warnings_about(child.stderr, library) == [], child.stderr
    assert json.loads(child.stdout) == json.loads(first.stdout)


def test_opting_out_keeps_the_bundled_blas(wheel_blas: None) -> None:
    done = run_python(f"import engine, mlx.core; {MAPPED_BLAS}", **{OPT_OUT_ENV: "0"})
    assert done.returncode == 0 and json.loads(done.stdout) == [] and done.stderr == ""


def test_a_console_script_drops_a_preload_it_did_not_choose(wheel_blas: None, tmp_path: Path) -> None:
    """A parent preloaded the wheel's OpenBLAS; the child was told to use a trapping one:
    it re-executes without the preload, and warns once."""
    library = build(tmp_path, "trap", TRAP)
    preload = fastblas.blas_env()
    assert preload is not None
    done = subprocess.run([str(BIN / "blockpool"), "doctor", "--no-measure"],
                          env=clean_env(**preload, **{LIB_ENV: str(library)}), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bundled reference BLAS (every candidate failed its probe)" in done.stdout
    mapped = [line for line in done.stdout.splitlines() if line.startswith("blas mapped")]
    assert len(mapped) == 1 and "libopenblas" not in mapped[0] and "libblas" in mapped[0], mapped
    assert len(warnings_about(done.stderr, library)) == 1, done.stderr
