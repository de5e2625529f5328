"""GGUF -> mlx-lm conversion on a tiny synthetic llama GGUF: layout, RoPE rows, caching, errors."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.gguf import permute_weights
from tokenizers.pre_tokenizers import ByteLevel

from engine.loading.gguf_convert import MARKER_FILE, converted_dir, ensure_converted
from engine.loading.loader import ModelLoadError, load_model

NUM_LAYERS, HIDDEN, FFN, NUM_HEADS, NUM_KV_HEADS = 2, 64, 128, 4, 2
HEAD_DIM = HIDDEN // NUM_HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
)


def _vocab() -> tuple[list[str], list[str]]:
    byte_chars = sorted(ByteLevel.alphabet())
    return SPECIALS + byte_chars + ["Ġh", "Ġhe"], ["Ġ h", "Ġh e"]


def hf_weights(seed: int = 0) -> dict[str, mx.array]:
    """Random weights in HF/mlx-lm llama naming and row order."""
    rng = np.random.default_rng(seed)
    tokens, _ = _vocab()
    shapes = {"model.embed_tokens.weight": (len(tokens), HIDDEN), "model.norm.weight": (HIDDEN,)}
    for i in range(NUM_LAYERS):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.self_attn.q_proj.weight": (NUM_HEADS * HEAD_DIM, HIDDEN),
            f"{p}.self_attn.k_proj.weight": (NUM_KV_HEADS * HEAD_DIM, HIDDEN),
            f"{p}.self_attn.v_proj.weight": (NUM_KV_HEADS * HEAD_DIM, HIDDEN),
            f"{p}.self_attn.o_proj.weight": (HIDDEN, NUM_HEADS * HEAD_DIM),
            f"{p}.mlp.gate_proj.weight": (FFN, HIDDEN), f"{p}.mlp.up_proj.weight": (FFN, HIDDEN),
            f"{p}.mlp.down_proj.weight": (HIDDEN, FFN),
            f"{p}.input_layernorm.weight": (HIDDEN,), f"{p}.post_attention_layernorm.weight": (HIDDEN,),
        }
    return {k: mx.array(rng.normal(0, 0.05, s).astype(np.float16)) for k, s in shapes.items()}


def _to_gguf_name(name: str) -> str:
    table = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    if name.startswith("model.layers."):
        _, _, index, rest = name.split(".", 3)
        module = rest.removesuffix(".weight")
        return f"blk.{index}.{table[module]}.weight"
    return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}[name]


def write_tiny_gguf(path: Path, *, architecture: str = "llama", seed: int = 0) -> dict[str, mx.array]:
    """A small llama GGUF as llama.cpp lays it out (Q/K rows permuted); returns the HF weights."""
    weights = hf_weights(seed)
    tensors = {}
    for name, value in weights.items():
        if "q_proj" in name:
            value = permute_weights(value, NUM_HEADS)
        elif "k_proj" in name:
            value = permute_weights(value, NUM_HEADS, NUM_KV_HEADS)
        # norms as F32, matrices as F16, like llama.cpp's F16 files
        tensors[_to_gguf_name(name)] = value.astype(mx.float32) if value.ndim == 1 else value
    tokens, merges = _vocab()
    u32 = lambda v: mx.array(v, dtype=mx.uint32)  # noqa: E731
    metadata = {
        "general.architecture": architecture,
        f"{architecture}.block_count": u32(NUM_LAYERS), f"{architecture}.embedding_length": u32(HIDDEN),
        f"{architecture}.feed_forward_length": u32(FFN), f"{architecture}.attention.head_count": u32(NUM_HEADS),
        f"{architecture}.attention.head_count_kv": u32(NUM_KV_HEADS), f"{architecture}.context_length": u32(256),
        f"{architecture}.rope.freq_base": mx.array(10000.0),
        f"{architecture}.attention.layer_norm_rms_epsilon": mx.array(1e-5),
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.token_type": mx.array([3 if t in SPECIALS else 1 for t in tokens], dtype=mx.int32),
        "tokenizer.ggml.bos_token_id": u32(1), "tokenizer.ggml.eos_token_id": u32(2),
        "tokenizer.ggml.padding_token_id": u32(2), "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    mx.save_gguf(str(path), tensors, metadata)
    return weights


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("BLOCKPOOL_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, dict[str, mx.array]]:
    path = tmp_path / "tiny-llama.gguf"
    return path, write_tiny_gguf(path)


def quiet(message: str, fraction: float) -> None:
    pass


def test_conversion_writes_a_standard_mlx_lm_directory(cache, tiny):
    model_dir = ensure_converted(tiny[0], "float32", quiet)
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "generation_config.json", MARKER_FILE} <= names
    assert model_dir.parent == cache / "models" and "float32" in model_dir.name
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["model_type"], config["num_key_value_heads"], config["tie_word_embeddings"]) == ("llama", 2, True)
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert (tokenizer_config["eos_token"], tokenizer_config["bos_token"]) == ("<|im_end|>", "<|im_start|>")
    assert tokenizer_config["chat_template"] == CHAT_TEMPLATE
    assert not [p for p in cache.joinpath("models").iterdir() if p.name.startswith(".")]


def test_q_and_k_rows_come_back_in_hf_order(cache, tiny):
    path, hf = tiny
    converted = mx.load(str(ensure_converted(path, "float32", quiet) / "model.safetensors"))
    for name in ("model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                 "model.layers.0.self_attn.v_proj.weight", "model.embed_tokens.weight"):
        np.testing.assert_array_equal(np.array(converted[name]), np.array(hf[name].astype(mx.float32)))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "quantized"])
def test_load_model_gives_evaluated_params_in_the_requested_dtype(cache, tiny, dtype):
    model, tokenizer = load_model(str(tiny[0]), dtype=dtype, progress=quiet)
    # An F16 file has nothing to keep quantized: "quantized" keeps float16, or float32 on the CPU.
    on_cpu = mx.default_device() == mx.cpu
    expected = (mx.float32 if on_cpu else mx.float16) if dtype == "quantized" else getattr(mx, dtype)
    assert model.model.norm.weight.dtype == expected
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == expected
    assert tokenizer.eos_token_ids == {2}
    logits = model(mx.array([tokenizer.encode(" he he")]))
    assert logits.shape == (1, 2, len(_vocab()[0]))


def test_second_load_reuses_the_conversion_without_rewriting(cache, tiny):
    first = ensure_converted(tiny[0], "float32", quiet)
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    messages: list[str] = []
    load_model(str(tiny[0]), dtype="float32", progress=lambda m, f: messages.append(m))
    assert messages == []
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == mtimes


def test_a_changed_source_makes_the_copy_stale_and_it_is_rebuilt(cache, tiny):
    path, _ = tiny
    model_dir = ensure_converted(path, "float32", quiet)
    new_hf = write_tiny_gguf(path, seed=1)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    rebuilt = ensure_converted(path, "float32", quiet)
    assert rebuilt == model_dir
    converted = mx.load(str(rebuilt / "model.safetensors"))
    np.testing.assert_array_equal(np.array(converted["model.norm.weight"]),
                                  np.array(new_hf["model.norm.weight"].astype(mx.float32)))
    assert json.loads((rebuilt / MARKER_FILE).read_text())["source_mtime_ns"] == 1


def test_a_copy_without_marker_is_never_trusted(cache, tiny):
    model_dir = ensure_converted(tiny[0], "float32", quiet)
    (model_dir / MARKER_FILE).unlink()
    (model_dir / "model.safetensors").write_bytes(b"half written")
    ensure_converted(tiny[0], "float32", quiet)
    assert len(mx.load(str(model_dir / "model.safetensors"))) > 0


def test_progress_reports_stages_from_zero_to_one(cache, tiny):
    seen: list[tuple[str, float]] = []
    ensure_converted(tiny[0], "bfloat16", lambda m, f: seen.append((m, f)))
    fractions = [f for _, f in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert len(seen) >= 4


def test_a_converted_directory_also_loads_as_a_local_mlx_lm_model_and_casts(cache, tiny):
    model_dir = ensure_converted(tiny[0], "float32", quiet)
    model, tokenizer = load_model(str(model_dir), dtype="bfloat16")
    assert model.model.norm.weight.dtype == mx.bfloat16
    assert tokenizer.eos_token_ids == {2}


def test_dtype_picks_its_own_directory(cache, tiny):
    assert converted_dir(tiny[0], "float32") != converted_dir(tiny[0], "quantized")


def test_other_architecture_is_refused_naming_it(cache, tmp_path):
    path = tmp_path / "qwen.gguf"
    write_tiny_gguf(path, architecture="qwen2")
    with pytest.raises(ModelLoadError, match=r"qwen\.gguf.*architecture 'qwen2'.*supported.*llama"):
        load_model(str(path), dtype="float32", progress=quiet)
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def write_raw_gguf(path: Path, architecture: str, tensors: list[tuple[str, tuple[int, ...], int, int]]) -> None:
    """A minimal GGUF v3 by hand: (name, GGUF dims, ggml type id, data bytes) per tensor, zero data."""
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 1)
    header += _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string(architecture)
    offset = 0
    for name, dims, type_id, num_bytes in tensors:
        header += _gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        header += struct.pack("<IQ", type_id, offset)
        offset += -(-num_bytes // 32) * 32
    padding = -len(header) % 32
    path.write_bytes(header + b"\0" * (padding + offset))


def test_k_quant_tensor_in_a_llama_file_is_refused_naming_the_type(cache, tmp_path):
    path = tmp_path / "q4k.gguf"
    write_raw_gguf(path, "llama", [("blk.0.attn_q.weight", (256, 1), 12, 144), ("output_norm.weight", (256,), 0, 1024)])
    with pytest.raises(ModelLoadError, match=r"q4k\.gguf.*Q4_K x1.*supported tensor types: F32, F16, Q4_0, Q4_1, Q8_0"):
        load_model(str(path), dtype="float32", progress=quiet)


def test_unknown_tensor_name_is_refused(cache, tmp_path):
    path = tmp_path / "moe.gguf"
    write_raw_gguf(path, "llama", [("blk.0.ffn_gate_exps.weight", (4, 4), 0, 64)])
    with pytest.raises(ModelLoadError, match=r"moe\.gguf.*'blk\.0\.ffn_gate_exps\.weight'"):
        load_model(str(path), dtype="float32", progress=quiet)


@pytest.mark.parametrize("keep_fraction", [0.0001, 0.01, 0.5, 0.999])
def test_truncated_copies_are_refused(cache, tiny, tmp_path, keep_fraction):
    data = tiny[0].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    with pytest.raises(ModelLoadError, match=r"cut\.gguf.*(truncated|not a GGUF)"):
        load_model(str(cut), dtype="float32", progress=quiet)


@pytest.mark.parametrize("payload", [b"", b"GGUF", b"\x00" * 4096, b"not a model at all\n" * 50])
def test_garbage_is_refused(cache, tmp_path, payload):
    path = tmp_path / "garbage.gguf"
    path.write_bytes(payload)
    with pytest.raises(ModelLoadError, match=r"garbage\.gguf.*(not a GGUF|truncated)"):
        load_model(str(path), dtype="float32", progress=quiet)
