"""The probe's child process: load one BLAS, multiply small float32 matrices, compare.

Run as a file (``python -I _probe_child.py LIB``), never as ``engine.*``: importing the
engine package would load a BLAS in this process too. It may die by a signal; that is
the point. The parent reads one JSON line from stdout.
"""

from __future__ import annotations

import ctypes
import json
import resource
import sys

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
# Odd sizes reach the kernels' edge code, the larger one the main loops (and threads).
SHAPES = ((67, 131, 45, False), (256, 192, 160, True))  # m, n, k, B transposed
EXIT_WRONG, EXIT_UNLOADABLE = 3, 4


def main(path: str) -> int:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a trapping library leaves no core file
    try:
        lib = ctypes.CDLL(path)
        sgemm = lib.cblas_sgemm
    except (OSError, AttributeError) as exc:
        return report(EXIT_UNLOADABLE, error=f"cannot load: {exc}")
    sgemm.restype = None
    sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                           ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    rng = np.random.default_rng(0)
    worst = 0.0
    for m, n, k, b_transposed in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if b_transposed else (k, n), dtype=np.float32)
        c = np.zeros((m, n), dtype=np.float32)
        sgemm(ROW_MAJOR, NO_TRANS, TRANS if b_transposed else NO_TRANS, m, n, k, 1.0, a.ctypes.data, k,
              b.ctypes.data, k if b_transposed else n, 0.0, c.ctypes.data, n)
        expected = a.astype(np.float64) @ (b.T if b_transposed else b).astype(np.float64)
        error = float(np.nanmax(np.abs(c - expected))) if np.isfinite(c).all() else float("inf")
        worst = max(worst, error)
        if error > 1e-3 * np.sqrt(k):  # float32 sums of k products carry ~1e-6 * sqrt(k)
            return report(EXIT_WRONG, error=f"wrong answer: max error {error:.3g} on a {m}x{k}x{n} sgemm")
    return report(0, config=_text(lib, "openblas_get_config"), core=_text(lib, "openblas_get_corename"),
                  max_error=worst)


def _text(lib: ctypes.CDLL, name: str) -> str:
    """An OpenBLAS info string, or '' for a BLAS that lacks it."""
    func = getattr(lib, name, None)
    if func is None:
        return ""
    func.restype = ctypes.c_char_p
    return (func() or b"").decode(errors="replace").strip()


def report(code: int, **fields: object) -> int:
    print(json.dumps(fields), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
