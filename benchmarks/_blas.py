"""Import first: puts the benchmark on the chosen fast BLAS before MLX loads.

``from engine import fastblas`` loads it in-process (probed, see engine/blas/); a BLAS
that ``make bench`` preloaded and that differs from this process's choice means a restart.
BLOCKPOOL_FAST_BLAS=0 opts out.
"""

from engine import fastblas

fastblas.reexec_if_needed()
