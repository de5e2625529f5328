"""The seed's Sprint 2 experiments as runnable code: EXP-005 (correctness) and EXP-006 (gather).

Each experiment writes its artifacts (JSON, CSV, Markdown) into an output folder;
``blockpool exp005`` and ``blockpool exp006`` are the command-line front ends.
"""
