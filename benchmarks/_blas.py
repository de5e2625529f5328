"""Import first: re-executes the benchmark script with OpenBLAS preloaded, before MLX loads.

A no-op under ``python -m engine.fastblas`` (``make bench``) or with BLOCKPOOL_FAST_BLAS=0.
"""

from engine import fastblas

fastblas.reexec_if_needed()
