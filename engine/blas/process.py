"""How a process gets the chosen BLAS: loaded in-process, or preloaded into a new process.

The library (chosen and probed by ``choice``) must be in the process before
``libmlx.so`` loads. Two ways, neither importing MLX:
- in-process: ``import engine`` loads it with ``RTLD_GLOBAL`` (``load_in_process``), so a
  user's script, pytest and the benchmarks get it without a restart;
- preloaded: ``python -m engine.fastblas CMD...`` (``make test``, ``make bench``) runs CMD
  with ``LD_PRELOAD``, which its child processes inherit.
``BLOCKPOOL_FAST_BLAS=0`` opts out, ``BLOCKPOOL_BLAS_LIB`` names another library and
``BLOCKPOOL_BLAS_THREADS`` sets its threads.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from engine import env

from .choice import Choice, choose
from .environment import PRELOADED_ENV, preload_vars, split, without_preload


@dataclass
class _ProcessState:
    choice: Choice | None = None
    load_attempted: bool = False
    loaded: str | None = None  # the path this process dlopen-ed
    load_problem: str | None = None  # why the chosen library is not in this process (said on stderr)


_state = _ProcessState()


def current_choice() -> Choice:
    """This process's choice, made (and warned about) once."""
    if _state.choice is None:
        _state.choice = choose()
    return _state.choice


def fallback_notes() -> tuple[str, ...]:
    """What this process said on stderr about falling back from a BLAS, for an app that hides
    stderr (blockpool-tui). A child of a process that warned already stays quiet on stderr,
    but its notes are the same: the choice, and its rejections, are made again from the
    cached verdicts (this makes the choice if nothing did yet)."""
    notes = current_choice().fallback_notes()
    return (*notes, _state.load_problem) if _state.load_problem is not None else notes


def preloaded() -> str | None:
    """The library a parent put on LD_PRELOAD for us, if it is still there."""
    path = env.text(PRELOADED_ENV)
    return path if path and path in split(os.environ.get("LD_PRELOAD")) else None


def loaded_library() -> str | None:
    """The fast BLAS in this process (preloaded or loaded in-process), else None."""
    return _state.loaded or preloaded()


def active() -> bool:
    """Whether MLX in this process runs on a fast BLAS."""
    return loaded_library() is not None


def mapped_blas_files() -> list[str]:
    """The BLAS libraries mapped into this process now (Linux): what MLX can actually use."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8")
    except OSError:
        return []
    return sorted({line.split()[-1] for line in maps.splitlines() if "blas" in line.rsplit("/", 1)[-1].lower()})


def load_in_process() -> None:
    """Load the chosen BLAS into this process before MLX, once; warn once if MLX came first."""
    if _state.load_attempted or preloaded() is not None or env.fast_blas_opted_out():
        return
    _state.load_attempted = True
    choice = current_choice()
    if choice.library is None:
        return
    if "mlx.core" in sys.modules:
        _load_problem("MLX was imported before engine, so it runs on its bundled BLAS (slower); "
                      "import engine first, or run through `python -m engine.fastblas`")
        return
    # OpenBLAS reads its thread count once, while it loads.
    os.environ["OPENBLAS_NUM_THREADS"] = str(choice.threads)
    try:
        ctypes.CDLL(str(choice.library.load_path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        _load_problem(f"cannot load BLAS {choice.library.path} in this process ({exc}); using the bundled "
                      "BLAS (slower); `python -m engine.fastblas CMD` preloads it instead")
        return
    _state.loaded = str(choice.library.load_path)


def _load_problem(text: str) -> None:
    _state.load_problem = text
    print(f"blockpool: {text}", file=sys.stderr)


def blas_env(choice: Choice | None = None) -> dict[str, str] | None:
    """Environment additions that preload the chosen BLAS, or None where none applies."""
    choice = choice if choice is not None else current_choice()
    if choice.library is None:
        return None
    return preload_vars(choice.library, without_preload(os.environ), choice.threads)


def reexec_if_needed() -> None:
    """Console scripts: make sure the chosen BLAS is the one in this process.

    ``import engine`` normally loaded it already. Only a BLAS preloaded by a parent that
    differs from this process's choice (another BLOCKPOOL_BLAS_LIB, an opt-out) needs a
    restart without it."""
    inherited = preloaded()
    if inherited is None:
        load_in_process()
        return
    if "mlx.core" in sys.modules:
        return
    choice = current_choice()
    if choice.library is not None and str(choice.library.load_path) == inherited:
        return
    env = {**without_preload(os.environ), **(blas_env(choice) or {})}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
