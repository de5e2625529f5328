"""Run MLX's CPU backend on OpenBLAS instead of the reference BLAS its Linux wheel bundles.

Measured here (2-core AMD EPYC, float32 512x576 @ 576x1536): bundled BLAS 7.7 GFLOP/s,
OpenBLAS 0.3.31 (PyPI ``cmeel-openblas``) ~450 GFLOP/s. Prefill is matmul-bound, so this
is the difference between seconds and minutes for a long prompt.

The library must be in place before ``libmlx.so`` loads, so it is preloaded
(``LD_PRELOAD``) into a fresh process: ``python -m engine.fastblas CMD...`` runs CMD
with it, and the console scripts re-exec themselves once. Nothing here imports MLX.
Set ``BLOCKPOOL_FAST_BLAS=0`` to opt out.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import sys
from pathlib import Path

from .loading.paths import cache_dir

_MARKER = "BLOCKPOOL_FAST_BLAS"


def _site_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent


def _openblas_and_runtime() -> tuple[Path, Path] | None:
    """cmeel's libopenblas and the folder of MLX's bundled Fortran runtime, if both exist."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return None
    site = _site_dir("mlx")
    if site is None:
        return None
    openblas = site / "cmeel.prefix" / "lib" / "libopenblas.so.0"
    runtime = site / "mlx_cpu.libs"
    if not openblas.exists() or not runtime.is_dir():
        return None
    return openblas, runtime


def blas_env() -> dict[str, str] | None:
    """Environment additions that preload OpenBLAS, or None where it does not apply."""
    found = _openblas_and_runtime()
    if found is None or os.environ.get(_MARKER) == "0":
        return None
    openblas, runtime = found
    # cmeel's OpenBLAS links libgfortran.so.5 by its plain name; MLX's wheel ships the
    # same runtime under hashed names. Link the plain names to them in our cache.
    link_dir = cache_dir() / "fastblas" / hashlib.sha1(str(runtime).encode()).hexdigest()[:12]
    link_dir.mkdir(parents=True, exist_ok=True)
    for lib in runtime.iterdir():
        for stem in ("libgfortran", "libquadmath"):
            if lib.name.startswith(stem + "-"):
                _symlink(link_dir / lib.name, lib)
                _symlink(link_dir / (stem + (".so.5" if stem == "libgfortran" else ".so.0")), lib)
    paths = [str(link_dir)] + [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    preload = [str(openblas)] + [p for p in os.environ.get("LD_PRELOAD", "").split(":") if p]
    env = {"LD_LIBRARY_PATH": ":".join(paths), "LD_PRELOAD": ":".join(preload), _MARKER: "1"}
    # One BLAS thread unless told otherwise: measured on a busy 2-core machine, float32
    # decode ran 17.4 tok/s with one thread and 3.1 with OpenBLAS's spinning default.
    env["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS", "1")
    return env


def _symlink(link: Path, target: Path) -> None:
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)  # atomic: concurrent starts never see a half-made link


def active() -> bool:
    """Whether this process was started with OpenBLAS preloaded."""
    return os.environ.get(_MARKER) == "1" and "libopenblas" in os.environ.get("LD_PRELOAD", "")


def reexec_if_needed() -> None:
    """Restart this console script with OpenBLAS preloaded (once; before MLX loads)."""
    if active() or os.environ.get(_MARKER) == "0" or "mlx.core" in sys.modules:
        return
    env = blas_env()
    if env is None:
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})


def main(argv: list[str] | None = None) -> None:
    """``python -m engine.fastblas CMD [ARGS...]``: run CMD with OpenBLAS preloaded."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m engine.fastblas CMD [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    env = blas_env()
    os.execvpe(args[0], args, {**os.environ, **(env or {})})


if __name__ == "__main__":
    main()
