"""Shared fixtures: the real default model, and the optional Gemma 3 270M, are loaded once per test session."""

from __future__ import annotations

import os
import time
import warnings

import pytest

from engine import fastblas


_TIMELINE: str | None = None  # BLOCKPOOL_TEST_TIMELINE, in the processes that run tests


def pytest_configure(config: pytest.Config) -> None:
    global _TIMELINE
    # xdist's controller reports every test again: only its workers (or a plain run) write.
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        _TIMELINE = os.environ.get("BLOCKPOOL_TEST_TIMELINE")
    if fastblas.blas_env() is not None and not fastblas.active():
        warnings.warn(
            "MLX is running on the slow reference BLAS; run the tests with `make test` "
            "(which preloads OpenBLAS) for ~10x faster prefill",
            stacklevel=1,
        )


def pytest_runtest_logfinish(nodeid: str) -> None:
    """With ``BLOCKPOOL_TEST_TIMELINE=FILE``, each test's worker and end time go to FILE (one
    line per test): how the suite's files spread over the xdist workers, and where it waits."""
    if _TIMELINE:
        with open(_TIMELINE, "a", encoding="utf-8") as out:
            out.write(f"{time.time():.1f} {os.environ.get('PYTEST_XDIST_WORKER', 'main')} {nodeid}\n")


@pytest.fixture
def no_user_config(monkeypatch, tmp_path):
    """No config file, and none of the app's settings from the environment (``BLOCKPOOL_<NAME>``)."""
    from tui.settings import TuiSettings

    monkeypatch.setenv("BLOCKPOOL_CONFIG", str(tmp_path / "absent.toml"))
    for name in TuiSettings.model_fields:
        monkeypatch.delenv(f"BLOCKPOOL_{name.upper()}", raising=False)


@pytest.fixture
def anyio_backend() -> str:
    """Pilot tests (``pytest.mark.anyio``) run on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def default_model():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct, default dtype."""
    from engine import load_model

    return load_model()


@pytest.fixture(scope="session")
def default_spec(default_model):
    from pool import ModelCacheSpec

    return ModelCacheSpec.from_model(default_model[0])


@pytest.fixture(scope="session")
def gemma():
    """(model, tokenizer) of Gemma 3 270M (the optional alias), default dtype; the modules using it
    skip without the optional packages. Shared, so no test may change it: test_integrity_gemma
    sets a chat template on its tokenizer and loads its own."""
    from engine import load_model

    return load_model("gemma3-270m")


@pytest.fixture(scope="session")
def gemma_spec(gemma):
    from pool import ModelCacheSpec

    return ModelCacheSpec.from_model(gemma[0])


@pytest.fixture(scope="session")
def server():
    """One ``blockpool serve`` subprocess for the server API modules (started on first use)."""
    from tests.server_harness import running_server

    with running_server("--blocks", "1200", "--max-batch", "8", "--max-queue", "32") as proc:
        yield proc


@pytest.fixture(scope="session")
def client(server):
    """The official openai client on ``server``."""
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
