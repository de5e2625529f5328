"""The embedded SmolLM2, converted from its GGUF, generates coherent English through mlx-lm.

A wrong Q/K row permutation (RoPE) or a wrong tokenizer gives gibberish here,
so these tests guard the conversion end to end.
"""

from __future__ import annotations

import re

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm import generate, stream_generate

from engine.loading.gguf_convert import converted_dir
from engine.loading.loader import default_dtype, embedded_gguf_path, load_model

pytestmark = pytest.mark.slow

COMMON_WORDS = {"the", "and", "a", "of", "to", "is", "in", "with", "that", "it", "for", "are", "this"}


@pytest.fixture(scope="module")
def quantized_model():
    return load_model(dtype="quantized")


def test_default_model_continues_the_fox_in_english(default_model):
    model, tokenizer = default_model
    text = generate(model, tokenizer, prompt="The quick brown fox", max_tokens=40)
    words = re.findall(r"[a-z']+", text.lower())
    plain = sum(c.isascii() and (c.isalpha() or c in " \n.,;:'\"!?-") for c in text)
    assert plain / len(text) > 0.95, text
    assert len(COMMON_WORDS & set(words)) >= 4, text
    assert len(set(words)) / len(words) > 0.5, text  # not a loop of one phrase
    # Greedy SmolLM2 goes on about a "quick brown bear" and a homophone fallacy.
    assert {"fox", "brown", "jumps", "lazy", "dog", "quick"} & set(words), text


def test_default_model_answers_a_chat_and_stops_at_im_end(default_model):
    model, tokenizer = default_model
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    responses = list(stream_generate(model, tokenizer, prompt, max_tokens=40))
    text = "".join(r.text for r in responses)
    assert "Paris" in text
    assert responses[-1].finish_reason == "stop" and responses[-1].token == 2  # <|im_end|>
    assert tokenizer.eos_token_ids == {2}


def test_default_dtype_params_are_evaluated_in_that_dtype(default_model):
    model, _ = default_model
    expected = mx.float32 if default_dtype() == "float32" else mx.uint32
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == expected


def test_quantized_keeps_the_gguf_bits(quantized_model):
    model, _ = quantized_model
    embed, q_proj = model.model.embed_tokens, model.model.layers[0].self_attn.q_proj
    assert isinstance(embed, nn.QuantizedEmbedding) and (embed.bits, embed.group_size) == (8, 32)
    assert isinstance(q_proj, nn.QuantizedLinear) and (q_proj.bits, q_proj.group_size) == (4, 32)


def test_quantized_dequantizes_to_the_float32_weights(default_model, quantized_model):
    float_model = default_model[0] if default_dtype() == "float32" else load_model(dtype="float32")[0]
    pairs = [
        (quantized_model[0].model.layers[3].self_attn.q_proj, float_model.model.layers[3].self_attn.q_proj),
        (quantized_model[0].model.layers[3].self_attn.k_proj, float_model.model.layers[3].self_attn.k_proj),
        (quantized_model[0].model.embed_tokens, float_model.model.embed_tokens),
    ]
    for quantized, plain in pairs:
        values = mx.dequantize(quantized.weight, quantized.scales.astype(mx.float32),
                               quantized.biases.astype(mx.float32), group_size=32, bits=quantized.bits)
        assert mx.allclose(values, plain.weight.astype(mx.float32), rtol=1e-5, atol=1e-6).item()


def test_float32_and_quantized_greedy_agree(default_model, quantized_model):
    model, tokenizer = default_model
    prompt = tokenizer.encode("The quick brown fox")
    greedy = [r.token for r in stream_generate(model, tokenizer, prompt, max_tokens=12)]
    # Teacher-forced: one quantized forward predicts each next greedy token.
    logits = quantized_model[0](mx.array([prompt + greedy[:-1]]))
    predicted = mx.argmax(logits[0, len(prompt) - 1:], axis=-1).tolist()
    assert predicted[:8] == greedy[:8]


def test_loading_again_reuses_the_conversion(default_model):
    model_dir = converted_dir(embedded_gguf_path(), default_dtype())
    mtimes = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    messages: list[str] = []
    load_model(progress=lambda message, fraction: messages.append(message))
    assert messages == []
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == mtimes
