"""Where the fast BLAS candidates are, and how to make each loadable.

Order: ``$BLOCKPOOL_BLAS_LIB`` alone when set; otherwise the OpenBLAS wheel pinned for
this platform in pyproject.toml, then a system OpenBLAS (Debian's ``libopenblas0-pthread``
builds for every CPU kind) where one is installed. Each is probed before use (probe.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from engine import env
from engine.env import BLAS_LIB as LIB_ENV
from engine.loading.paths import cache_dir
# Debian/Ubuntu's DYNAMIC_ARCH OpenBLAS (apt install libopenblas0-pthread).
_SYSTEM_OPENBLAS = "/usr/lib/{arch}-linux-gnu/openblas-pthread/libopenblas.so.0"


@dataclass(frozen=True)
class Library:
    """A BLAS file: ``path`` names it to people and keys its verdict; ``load_path`` is what
    is handed to the dynamic loader (a link beside the Fortran runtime it needs)."""

    path: Path
    load_path: Path
    source: str
    library_dirs: tuple[Path, ...] = ()


def candidates() -> list[Library]:
    """The libraries to try, best first; empty off Linux (macOS has Accelerate)."""
    if (explicit := env.path(LIB_ENV)) is not None:
        path = explicit.absolute()
        return [Library(path=path, load_path=path, source=LIB_ENV)]
    if sys.platform != "linux":
        return []
    found = [lib for lib in (_wheel_library(), _system_library()) if lib is not None]
    return found


def _wheel_library() -> Library | None:
    """The pinned wheel's OpenBLAS: ngsolve-openblas on x86_64, cmeel-openblas on aarch64."""
    machine = platform.machine()
    if machine == "x86_64":
        folder = _package_dir("ngsolve_openblas")
        files = sorted(folder.glob("libopenblas*.so*")) if folder else []
        source = "ngsolve-openblas wheel"
    elif machine == "aarch64":
        folder = _package_dir("cmeel")
        files = [folder.parent / "cmeel.prefix" / "lib" / "libopenblas.so.0"] if folder else []
        source = "cmeel-openblas wheel"
    else:
        return None
    files = [f for f in files if f.is_file()]
    runtime = _mlx_runtime_dir()
    if not files or runtime is None:
        return None
    try:
        return _linked(files[0], runtime, source)
    except OSError:  # a read-only cache folder: try the file as it is (the probe will tell)
        return Library(path=files[0].resolve(), load_path=files[0], source=source)


def _system_library() -> Library | None:
    path = Path(_SYSTEM_OPENBLAS.format(arch=platform.machine()))
    return Library(path=path, load_path=path, source="system OpenBLAS") if path.is_file() else None


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _mlx_runtime_dir() -> Path | None:
    """MLX's Linux wheel ships libgfortran/libquadmath under hashed names in mlx_cpu.libs."""
    mlx = _package_dir("mlx")
    runtime = mlx.parent / "mlx_cpu.libs" if mlx else None
    return runtime if runtime is not None and runtime.is_dir() else None


def _linked(library: Path, runtime: Path, source: str) -> Library:
    """Link ``library`` into a cache folder beside MLX's Fortran runtime under the plain
    names it asks for (``libgfortran.so.5``). A wheel OpenBLAS whose rpath is ``$ORIGIN``
    then loads from that link alone; the folder also goes on LD_LIBRARY_PATH for the rest."""
    real = library.resolve()
    link_dir = cache_dir() / "blas" / "lib" / hashlib.sha1(f"{real}\n{runtime}".encode()).hexdigest()[:12]
    link_dir.mkdir(parents=True, exist_ok=True)
    for lib in runtime.iterdir():
        for stem, plain in (("libgfortran", "libgfortran.so.5"), ("libquadmath", "libquadmath.so.0")):
            if lib.name.startswith(stem + "-"):
                _symlink(link_dir / lib.name, lib)
                _symlink(link_dir / plain, lib)
    _symlink(link_dir / real.name, real)
    return Library(path=real, load_path=link_dir / real.name, source=source, library_dirs=(link_dir,))


def _symlink(link: Path, target: Path) -> None:
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)  # atomic: concurrent starts never see a half-made link
