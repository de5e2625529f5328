"""Turn a llama-architecture GGUF into mlx-lm `llama` weights and config.

`mx.load` reads Q4_0/Q4_1/Q8_0 tensors as MLX affine-quantized triplets
(`weight`, `scales`, `biases`, group size 32), so "quantized" keeps them bit
for bit and the float dtypes dequantize them.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from .gguf_header import GGUFHeader, UnsupportedGGUF, mlx_module_name

SUPPORTED_TENSOR_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")
GROUP_SIZE = 32  # every GGUF block type that mx.load maps to affine uses 32
QUANT_SUFFIXES = (".weight", ".scales", ".biases")

# GGUF tensor stem -> mlx-lm llama module path (the reverse of mlx_lm/gguf.py).
BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def check_llama(header: GGUFHeader) -> None:
    """Raise UnsupportedGGUF unless every tensor has a type and name we convert."""
    bad_types = sorted({t.type_name for t in header.tensors} - set(SUPPORTED_TENSOR_TYPES))
    if bad_types:
        counts = header.tensor_type_counts()
        found = ", ".join(f"{name} x{counts[name]}" for name in bad_types)
        raise UnsupportedGGUF(
            f"{header.path}: llama tensors of type {found} cannot be loaded by MLX; "
            f"supported tensor types: {', '.join(SUPPORTED_TENSOR_TYPES)}"
        )
    for tensor in header.tensors:
        module_name(tensor.name)  # raises on a tensor we would not know where to put


def module_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    name = mlx_module_name(gguf_name, BLOCK_NAMES, TOP_NAMES)
    if name is not None:
        return name
    raise UnsupportedGGUF(
        f"tensor {gguf_name!r} has no place in an mlx-lm llama model "
        "(rope_freqs, MoE experts and biases are not supported)"
    )


def llama_config(header: GGUFHeader) -> dict[str, Any]:
    """An mlx-lm / HF `LlamaForCausalLM` config.json from the `llama.*` metadata."""
    num_heads = int(header.arch_value("attention.head_count"))
    hidden_size = int(header.arch_value("embedding_length"))
    head_dim = int(header.arch_value("attention.key_length", hidden_size // num_heads))
    tensor_names = {t.name for t in header.tensors}
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden_size,
        "num_hidden_layers": int(header.arch_value("block_count")),
        "intermediate_size": int(header.arch_value("feed_forward_length")),
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(header.arch_value("attention.head_count_kv", num_heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(header.arch_value("attention.layer_norm_rms_epsilon", 1e-5)),
        "vocab_size": int(header.arch_value("vocab_size", len(header.metadata["tokenizer.ggml.tokens"]))),
        "rope_theta": float(header.arch_value("rope.freq_base", 10000.0)),
        # Q/K rows are un-permuted below, so the HF (non-interleaved) RoPE applies.
        "rope_traditional": False,
        "max_position_embeddings": int(header.arch_value("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    if header.arch_value("rope.scaling.type") == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": float(header.arch_value("rope.scaling.factor"))}
    rope_dims = header.arch_value("rope.dimension_count", head_dim)
    if int(rope_dims) != head_dim:
        raise UnsupportedGGUF(f"{header.path}: partial RoPE ({rope_dims} of {head_dim} dims) is not supported")
    return config


def unpermute_rows(rows: mx.array, num_heads: int) -> mx.array:
    """Undo llama.cpp's Q/K row permutation for interleaved RoPE.

    The HF->GGUF converter did `w.reshape(n_head, 2, head_dim // 2, ...).swapaxes(1, 2)`.
    Only rows move, so this works on packed quantized weights, scales and biases alike.
    """
    head_rows = rows.shape[0] // num_heads
    rest = rows.shape[1:]
    return rows.reshape(num_heads, head_rows // 2, 2, *rest).swapaxes(1, 2).reshape(rows.shape)


def llama_weights(
    header: GGUFHeader, arrays: dict[str, mx.array], dtype: str
) -> tuple[dict[str, mx.array], dict[str, Any] | None]:
    """mlx-lm weights in `dtype`, plus the config `quantization` dict for "quantized"."""
    config = llama_config(header)
    heads_for = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    weights: dict[str, mx.array] = {}
    for name, array in arrays.items():
        stem = name.rpartition(".")[0].split(".")
        if len(stem) == 3 and stem[2] in heads_for:
            array = unpermute_rows(array, heads_for[stem[2]])
        weights[module_name(name)] = array
    if dtype == "quantized":
        return _keep_quantized(weights)
    return _dequantized(weights, getattr(mx, dtype)), None


def _quantized_modules(weights: dict[str, mx.array]) -> list[str]:
    return sorted(k.removesuffix(".scales") for k in weights if k.endswith(".scales"))


def _bits(weights: dict[str, mx.array], module: str) -> int:
    # Packed uint32 columns * 32 bits over the unpacked width (groups * group size).
    packed_cols = weights[f"{module}.weight"].shape[-1]
    return packed_cols * 32 // (weights[f"{module}.scales"].shape[-1] * GROUP_SIZE)


def _keep_quantized(weights: dict[str, mx.array]) -> tuple[dict[str, mx.array], dict[str, Any]]:
    modules = _quantized_modules(weights)
    bits_by_module = {m: _bits(weights, m) for m in modules}
    bit_counts = [b for b in bits_by_module.values()]
    default_bits = max(set(bit_counts), key=bit_counts.count) if bit_counts else 4
    quantization: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": default_bits, "mode": "affine"}
    for module, bits in bits_by_module.items():
        if bits != default_bits:  # e.g. the Q8_0 embedding among Q4_1 layers
            quantization[module] = {"group_size": GROUP_SIZE, "bits": bits, "mode": "affine"}
    # Float tensors (norms) follow the GGUF scales' float16 so activations stay in one dtype.
    kept = {k: (v if v.dtype == mx.uint32 else v.astype(mx.float16)) for k, v in weights.items()}
    return kept, quantization


def _dequantized(weights: dict[str, mx.array], dtype: mx.Dtype) -> dict[str, mx.array]:
    out: dict[str, mx.array] = {}
    for module in _quantized_modules(weights):
        # float32 scales/biases: the result equals llama.cpp's dequantization up to rounding.
        out[f"{module}.weight"] = mx.dequantize(
            weights[f"{module}.weight"],
            weights[f"{module}.scales"].astype(mx.float32),
            weights[f"{module}.biases"].astype(mx.float32),
            group_size=GROUP_SIZE,
            bits=_bits(weights, module),
        ).astype(dtype)
    for name, array in weights.items():
        if name not in out and not name.endswith((".scales", ".biases")):
            out[name] = array.astype(dtype)
    return out
