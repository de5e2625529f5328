"""Choose the BLAS this process runs on: the first candidate that passes its probe, else
MLX's bundled one, saying so in one stderr line. Console scripts, ``make test``,
``make bench``, the benchmarks and ``import engine`` all come through ``choose()``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from engine import env
from engine.env import BLAS_THREADS as THREADS_ENV
from engine.env import BLAS_WARNED as WARNED_ENV
from engine.env import FAST_BLAS as OPT_OUT_ENV

from .cpu import CpuInfo, read_cpu
from .libraries import Library, candidates
from .probe import Verdict, probe
from .verdicts import VerdictCache

# One thread: see benchmarks/blas_threads.md. On 2 shared cores a second BLAS thread
# bought little quiet and cost much when another process held a core.
DEFAULT_THREADS = 1
BUNDLED = "MLX's bundled reference BLAS"


@dataclass(frozen=True)
class Choice:
    """The BLAS to run on: ``library`` None means MLX's bundled one, for ``reason``."""

    library: Library | None
    verdict: Verdict | None
    threads: int
    reason: str
    rejected: tuple[tuple[Library, Verdict], ...] = field(default=())
    from_cache: bool = False

    def fallback_notes(self) -> tuple[str, ...]:
        """One line per rejected library, as warned on stderr: what failed, why, what runs instead."""
        instead = str(self.library.path) if self.library is not None else f"{BUNDLED} instead (slower)"
        return tuple(rejected_note(library, verdict, instead) for library, verdict in self.rejected)


def choose(*, cache: VerdictCache | None = None, warn: bool = True) -> Choice:
    """Probe (or recall) each candidate in turn; warn once per rejected library."""
    threads = blas_threads()
    if env.fast_blas_opted_out():
        return Choice(None, None, threads, f"{OPT_OUT_ENV}=0 (opted out)")
    found = candidates()
    if not found:
        return Choice(None, None, threads, "no fast BLAS installed for this platform")
    cache = cache if cache is not None else VerdictCache()
    cpu = read_cpu()
    rejected: list[tuple[Library, Verdict]] = []
    for library in found:
        verdict, cached = verdict_for(library, cpu, cache, threads)
        if verdict.usable:
            if warn:
                _warn_rejected(rejected, instead=str(library.path))
            return Choice(library, verdict, threads, "probed ok", tuple(rejected), cached)
        rejected.append((library, verdict))
    if warn:
        _warn_rejected(rejected, instead=f"{BUNDLED} instead (slower)")
    return Choice(None, None, threads, "every candidate failed its probe", tuple(rejected))


def verdict_for(library: Library, cpu: CpuInfo, cache: VerdictCache, threads: int) -> tuple[Verdict, bool]:
    """The remembered verdict when library and CPU are unchanged, else a fresh probe."""
    if not library.path.is_file():
        return Verdict(False, f"no such file (from {library.source})"), False
    if (known := cache.get(library.path, cpu)) is not None:
        return known, True
    verdict = probe(library, threads=threads)
    cache.put(library.path, cpu, verdict)
    return verdict, False


def blas_threads() -> int:
    """``$BLOCKPOOL_BLAS_THREADS``, else ``$OPENBLAS_NUM_THREADS``, else the measured default."""
    for name in (THREADS_ENV, "OPENBLAS_NUM_THREADS"):
        text = env.text(name)
        if not text:
            continue
        if text.strip().isdigit() and int(text) >= 1:
            return int(text)
        print(f"blockpool: {name}={text!r} is not a positive integer; using {DEFAULT_THREADS} BLAS thread(s)",
              file=sys.stderr)
    return DEFAULT_THREADS


def rejected_note(library: Library, verdict: Verdict, instead: str) -> str:
    return f"BLAS {library.path} failed its probe: {verdict.reason}; using {instead}"


def _warn_rejected(rejected: list[tuple[Library, Verdict]], *, instead: str) -> None:
    """One line per rejected library, once per process tree."""
    warned = [p for p in (env.text(WARNED_ENV) or "").split(os.pathsep) if p]
    for library, verdict in rejected:
        if str(library.path) in warned:
            continue
        print(f"blockpool: {rejected_note(library, verdict, instead)}", file=sys.stderr, flush=True)
        warned.append(str(library.path))
    os.environ[WARNED_ENV] = os.pathsep.join(warned)
