"""Choosing a fast BLAS for MLX's CPU backend at run time, never crashing on the way.

- ``cpu``: which CPU this is (model, flags) — keys the verdicts;
- ``libraries``: the candidate libraries and how to make them loadable;
- ``probe``: a child process multiplies with a candidate, so a trap kills only the child;
- ``verdicts``: the probe's answers, cached per library file and CPU;
- ``choice``: picks the first usable candidate, or the bundled BLAS with one warning;
- ``measure``: matmul GFLOP/s of a BLAS against the bundled one (doctor, benchmarks).
How a process gets the chosen library (in-process or preloaded) is ``engine.fastblas``.
"""
