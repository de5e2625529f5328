"""Small BLAS libraries built with the system C compiler, to test the probe for real, and
the environment the BLAS tests start blockpool processes in.

Each library exports ``cblas_sgemm``: one that traps, one that answers wrongly, one
correct one that uses an AVX-512 instruction (runs here, dies on an AVX2-only CPU).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.blas.choice import WARNED_ENV
from engine.blas.environment import without_preload
from engine.blas.libraries import LIB_ENV, Library

BIN = Path(sys.executable).parent  # the venv's console scripts
TRAP = "void cblas_sgemm(void) { __builtin_trap(); }\n"

# Row-major C = alpha * op(A) @ op(B) + beta * C; CblasTrans is 112.
_SGEMM = """
{prelude}
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {{
    {entry}
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {{
            float sum = 0.0f;
            for (int p = 0; p < k; p++)
                sum += (ta == 112 ? a[p * lda + i] : a[i * lda + p]) * (tb == 112 ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = alpha * sum + (beta == 0.0f ? 0.0f : beta * c[i * ldc + j]) {error};
        }}
}}
"""
WRONG = _SGEMM.format(prelude="", entry="", error="+ 1.0f")
# The zmm instruction sits on the hot path's entry, as in a SKYLAKEX-only OpenBLAS.
AVX512 = _SGEMM.format(prelude="#include <immintrin.h>",
                       entry="volatile __m512 probe = _mm512_set1_ps(alpha); (void)probe;", error="")


def compiler() -> str:
    """The system C compiler, or skip the test that needs one."""
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if found is None:
        pytest.skip("no C compiler (cc, gcc or clang) to build a test BLAS library")
    return found


def build(folder: Path, name: str, source: str, *flags: str) -> Path:
    """Compile ``source`` into ``folder/lib<name>.so``."""
    c_file = folder / f"{name}.c"
    c_file.write_text(source, encoding="utf-8")
    library = folder / f"lib{name}.so"
    subprocess.run([compiler(), "-shared", "-fPIC", "-O1", *flags, "-o", str(library), str(c_file)],
                   check=True, capture_output=True)
    return library



def own(path: Path) -> Library:
    """A library file as it is, as BLOCKPOOL_BLAS_LIB would name it."""
    return Library(path=path, load_path=path, source="test")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without the suite's own BLAS decisions, plus ``extra``."""
    env = without_preload(os.environ)
    env.pop(WARNED_ENV, None)
    env.pop(LIB_ENV, None)
    return {**env, **extra}


def warnings_about(stderr: str, library: Path) -> list[str]:
    return [line for line in stderr.splitlines() if str(library) in line]
