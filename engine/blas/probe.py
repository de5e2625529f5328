"""Probe a BLAS in a short-lived child process, so that a library that traps on this CPU
kills the child and never the product."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .environment import loadable_vars, without_preload
from .libraries import Library

CHILD = Path(__file__).with_name("_probe_child.py")
# Cold, the child spends ~0.2 s importing numpy; under CPU emulation (qemu) ~20x that.
PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Verdict:
    """Whether a library multiplied correctly here; ``reason`` says why not."""

    usable: bool
    reason: str
    config: str = ""
    core: str = ""
    probe_s: float = 0.0

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Verdict:
        return cls(usable=bool(data["usable"]), reason=str(data["reason"]), config=str(data.get("config", "")),
                   core=str(data.get("core", "")), probe_s=float(data.get("probe_s", 0.0)))  # type: ignore[arg-type]


def probe(library: Library, *, threads: int, timeout_s: float = PROBE_TIMEOUT_S,
          launcher: Sequence[str] = ()) -> Verdict:
    """Load ``library`` in a child process, run sgemm, compare with NumPy.

    ``launcher`` prefixes the child's command line, e.g. ``("qemu-x86_64", "-cpu", "Haswell")``
    to judge a library for another CPU kind."""
    started = time.perf_counter()
    command = [*launcher, sys.executable, "-I", str(CHILD), str(library.load_path)]
    try:
        done = subprocess.run(command, env=child_env(library, threads),
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"the probe did not finish in {timeout_s:.0f} s", probe_s=time.perf_counter() - started)
    except OSError as exc:
        return Verdict(False, f"cannot start the probe ({command[0]}): {exc}")
    elapsed = time.perf_counter() - started
    if done.returncode < 0:
        return Verdict(False, f"killed by {_signal_name(-done.returncode)}", probe_s=elapsed)
    payload = _last_json(done.stdout)
    if done.returncode != 0:
        detail = payload.get("error") or _tail(done.stderr) or "no output"
        return Verdict(False, f"probe exited {done.returncode}: {detail}", probe_s=elapsed)
    return Verdict(True, "ok", config=str(payload.get("config", "")), core=str(payload.get("core", "")),
                   probe_s=elapsed)


def child_env(library: Library, threads: int) -> dict[str, str]:
    """This environment minus any BLAS we preloaded, plus what ``library`` needs to load."""
    env = without_preload(os.environ)
    return {**env, **loadable_vars(library, env, threads)}


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} ({signal.strsignal(number)})"  # e.g. SIGILL (Illegal instruction)
    except ValueError:
        return f"signal {number}"


def _last_json(stdout: str) -> dict[str, object]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _tail(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
