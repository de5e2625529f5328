"""The verdict cache: a normal start reuses the probe's answer; a changed library file
(size, mtime) or CPU (model, flags) is probed again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.blas.choice import choose, verdict_for
from engine.blas.cpu import CpuInfo, read_cpu
from engine.blas.libraries import Library, candidates
from engine.blas.verdicts import VerdictCache
from tests.blas_libraries import WRONG, build, own

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx fma avx2

processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx fma avx2
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sve
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


@pytest.fixture
def library(tmp_path: Path) -> Library:
    """A real, quickly probed library (it answers wrongly, so its verdict is 'rejected')."""
    return own(build(tmp_path, "wrong", WRONG))


@pytest.fixture
def cache(tmp_path: Path) -> VerdictCache:
    return VerdictCache(tmp_path / "verdicts.json")


def test_a_second_start_reuses_the_verdict(library: Library, cache: VerdictCache) -> None:
    cpu = read_cpu()
    first, first_cached = verdict_for(library, cpu, cache, threads=1)
    second, second_cached = verdict_for(library, cpu, cache, threads=1)
    assert (first_cached, second_cached) == (False, True)
    assert second == first
    assert "wrong answer" in second.reason


def test_a_changed_mtime_probes_again(library: Library, cache: VerdictCache) -> None:
    cpu = read_cpu()
    verdict_for(library, cpu, cache, threads=1)
    stat = library.path.stat()
    os.utime(library.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert verdict_for(library, cpu, cache, threads=1)[1] is False
    assert verdict_for(library, cpu, cache, threads=1)[1] is True


def test_a_changed_size_probes_again(library: Library, cache: VerdictCache) -> None:
    cpu = read_cpu()
    verdict_for(library, cpu, cache, threads=1)
    mtime_ns = library.path.stat().st_mtime_ns
    with library.path.open("ab") as f:
        f.write(b"\0" * 64)  # past the ELF's end: still loadable, a different file
    os.utime(library.path, ns=(mtime_ns, mtime_ns))  # same mtime: only the size tells
    assert verdict_for(library, cpu, cache, threads=1)[1] is False


def test_another_cpu_probes_again(library: Library, cache: VerdictCache) -> None:
    cpu = read_cpu()
    verdict_for(library, cpu, cache, threads=1)
    fewer_flags = CpuInfo(model=cpu.model, machine=cpu.machine, flags=cpu.flags - {"avx512f", "sve2"} | {"x-test"})
    other_model = CpuInfo(model=cpu.model + " (another)", machine=cpu.machine, flags=cpu.flags)
    assert verdict_for(library, fewer_flags, cache, threads=1)[1] is False
    assert verdict_for(library, other_model, cache, threads=1)[1] is False
    assert verdict_for(library, other_model, cache, threads=1)[1] is True


def test_a_damaged_cache_file_means_probe_again(library: Library, cache: VerdictCache) -> None:
    cache.path.write_text("{ not json", encoding="utf-8")
    verdict, cached = verdict_for(library, read_cpu(), cache, threads=1)
    assert cached is False and "wrong answer" in verdict.reason
    assert cache.get(library.path, read_cpu()) == verdict  # and the file is whole again


def test_choose_remembers_the_pinned_openblas(cache: VerdictCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLOCKPOOL_BLAS_LIB", raising=False)
    monkeypatch.delenv("BLOCKPOOL_FAST_BLAS", raising=False)
    if not candidates():
        pytest.skip("no fast BLAS candidate on this platform")
    first, second = choose(cache=cache, warn=False), choose(cache=cache, warn=False)
    assert first.library is not None and first.verdict is not None and first.verdict.usable
    assert (first.from_cache, second.from_cache) == (False, True)
    assert second.library == first.library


def test_cpuinfo_x86_and_arm(tmp_path: Path) -> None:
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text(X86_CPUINFO, encoding="utf-8")
    arm.write_text(ARM_CPUINFO, encoding="utf-8")
    amd, neoverse = read_cpu(x86), read_cpu(arm)
    assert amd.model == "AMD EPYC 7B12"
    assert amd.simd_names() == ["AVX2", "FMA"]  # no AVX-512
    assert neoverse.model == "implementer 0x41 part 0xd40"
    assert neoverse.simd_names() == ["NEON", "SVE"]
    with_avx512 = CpuInfo(amd.model, amd.machine, amd.flags | {"avx512f"})
    assert with_avx512.key != amd.key
