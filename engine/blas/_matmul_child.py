"""Time a float32 matmul on MLX's CPU backend with whatever BLAS this process has.

Run as a file (``python -I _matmul_child.py M K N MIN_TIME_S``), never as ``engine.*``, so
the parent's environment alone decides the BLAS (LD_PRELOAD or none). Prints one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx


def main(m: int, k: int, n: int, min_time_s: float) -> int:
    mx.set_default_device(mx.cpu)
    a = mx.random.normal((m, k))
    b = mx.random.normal((k, n))
    mx.eval(a, b)
    mx.eval(a @ b)  # warm-up: first call allocates
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < min_time_s:
        t0 = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    print(json.dumps({"gflops": 2 * m * k * n / seconds / 1e9, "median_s": seconds, "runs": len(times),
                      "blas_files": _blas_files()}))
    return 0


def _blas_files() -> list[str]:
    """The BLAS libraries mapped into this process (proves which one ran)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    names = {line.split()[-1] for line in maps.splitlines() if "blas" in line.rsplit("/", 1)[-1].lower()}
    return sorted(names)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
