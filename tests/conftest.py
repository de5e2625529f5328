"""Shared fixtures: the real default model is loaded once per test session."""

from __future__ import annotations

import os
import warnings

import pytest

from engine import fastblas


def pytest_configure(config: pytest.Config) -> None:
    if fastblas.blas_env() is not None and not fastblas.active():
        warnings.warn(
            "MLX is running on the slow reference BLAS; run the tests with `make test` "
            "(which preloads OpenBLAS) for ~10x faster prefill",
            stacklevel=1,
        )


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
