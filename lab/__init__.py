"""The seed's Sprint 2 experiments as runnable code, EXP-005 (correctness) and EXP-006 (gather),
and the demo: outside the product packages (``engine`` never imports this one).

Each experiment writes its artifacts (JSON, CSV, Markdown) into an output folder;
``blockpool exp005``, ``blockpool exp006`` and ``blockpool demo`` are the command-line
front ends, and the benchmarks share ``lab.report``. EXP-006's histogram is a PNG when
matplotlib is installed (``pip install 'blockpool[experiments]'``; ``make`` installs it),
else text.
"""
