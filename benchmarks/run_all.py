"""Run every benchmark in this folder (``make bench``), each in its own process, then summarize.

Ours first (single, batch, warm, telemetry), then any other ``bench_*.py`` here, run
without arguments. ``--quick`` is passed to ours only. Each writes results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OURS = ("single", "batch", "warm", "telemetry")


def scripts(names: list[str]) -> list[Path]:
    """Benchmark scripts to run: ``names`` (e.g. "single"), or all of them in order."""
    found = {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}
    unknown = [n for n in names if n not in found]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; available: {', '.join(found)}")
    order = [n for n in OURS if n in found] + [n for n in found if n not in OURS]
    return [found[n] for n in order if not names or n in names]


def headline(name: str) -> str:
    path = HERE / "results" / f"{name}.json"
    try:
        head = json.loads(path.read_text(encoding="utf-8")).get("headline", {})
    except (OSError, ValueError):
        return "(no result JSON)"
    return f"{head.get('metric', '?')}: {head.get('value')} (goal {head.get('goal', '-')})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run, e.g. single warm (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (ours only)")
    args = parser.parse_args()
    failed = []
    summary = []
    for script in scripts(args.names):
        name = script.stem.removeprefix("bench_")
        extra = ["--quick"] if args.quick and name in OURS else []
        print(f"\n===== {script.name} {' '.join(extra)}", flush=True)
        tic = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *extra], cwd=HERE.parent)
        summary.append((script.stem, code, time.perf_counter() - tic))
        if code != 0:
            failed.append(script.name)
    print("\n===== summary")
    for stem, code, seconds in summary:
        print(f"{stem:<18} exit {code}  {seconds:6.1f} s  {headline(stem)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
