"""Turn a Gemma 3 GGUF into mlx-lm `gemma3_text` weights and config.

MLX cannot read k-quants (Q4_K, Q6_K), so every tensor is dequantized to
float32 with the `gguf` package (the optional `gemma` extra). "quantized"
then re-quantizes them with MLX 8-bit affine quantization.
"""

from __future__ import annotations

from typing import Any, Callable

import mlx.core as mx
import numpy as np

from .gguf_header import GGUFHeader, UnsupportedGGUF, mlx_module_name

try:
    import gguf
except ImportError:  # optional: only Gemma needs it
    gguf = None

GROUP_SIZE = 32
SLIDING_WINDOW_PATTERN = 6  # llama.cpp hard-codes it for gemma3: every 6th layer is global
LOCAL_ROPE_BASE = 10_000.0  # llama.cpp's rope_freq_base_train_swa for gemma3
# k-quant sub-blocks (Q6_K: 16 values) do not map onto MLX groups exactly, so we
# re-quantize at 8 bits. Measured on Gemma 3 270M: KL to float32 0.0014 nats/token
# (bfloat16: 0.0009) against 0.040 at the source bit widths, for 302 MB instead of 283 MB.
REQUANT_BITS = 8

BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

Progress = Callable[[str, float], None]


def check_gemma(header: GGUFHeader) -> None:
    """Raise UnsupportedGGUF when the gguf package is missing or a tensor is unknown."""
    if gguf is None:
        raise UnsupportedGGUF(
            f"{header.path}: Gemma 3 GGUFs need the `gguf` package to dequantize "
            "k-quants; run `pip install 'gguf>=0.17,<0.20'` (or `make gemma`)"
        )
    known = {t.name for t in gguf.GGMLQuantizationType}
    for tensor in header.tensors:
        if tensor.type_name not in known:
            raise UnsupportedGGUF(f"{header.path}: tensor {tensor.name!r} has unknown type {tensor.type_name}")
        module_name(tensor.name)


def module_name(gguf_name: str) -> str:
    """`blk.0.post_ffw_norm.weight` -> `model.layers.0.post_feedforward_layernorm.weight`."""
    name = mlx_module_name(gguf_name, BLOCK_NAMES, TOP_NAMES)
    if name is not None:
        return name
    raise UnsupportedGGUF(f"tensor {gguf_name!r} has no place in an mlx-lm gemma3_text model")


def gemma_config(header: GGUFHeader) -> dict[str, Any]:
    """An mlx-lm `gemma3_text` config.json from the `gemma3.*` metadata."""
    hidden_size = int(header.arch_value("embedding_length"))
    num_heads = int(header.arch_value("attention.head_count"))
    num_layers = int(header.arch_value("block_count"))
    head_dim = int(header.arch_value("attention.key_length", 256))
    # llama.cpp: 27B (62 layers) scales queries by hidden/heads, the others by head_dim.
    query_scalar = hidden_size // num_heads if num_layers == 62 else head_dim
    config: dict[str, Any] = {
        "model_type": "gemma3_text",
        "architectures": ["Gemma3ForCausalLM"],
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "intermediate_size": int(header.arch_value("feed_forward_length")),
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(header.arch_value("attention.head_count_kv", num_heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(header.arch_value("attention.layer_norm_rms_epsilon", 1e-6)),
        "vocab_size": len(header.metadata["tokenizer.ggml.tokens"]),
        "rope_theta": float(header.arch_value("rope.freq_base", 1_000_000.0)),
        "rope_local_base_freq": LOCAL_ROPE_BASE,
        "query_pre_attn_scalar": query_scalar,
        "sliding_window": int(header.arch_value("attention.sliding_window", 512)),
        "sliding_window_pattern": SLIDING_WINDOW_PATTERN,
        "layer_types": [
            "full_attention" if (i + 1) % SLIDING_WINDOW_PATTERN == 0 else "sliding_attention"
            for i in range(num_layers)
        ],
        "max_position_embeddings": int(header.arch_value("context_length", 32768)),
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": "output.weight" not in {t.name for t in header.tensors},
    }
    if header.arch_value("rope.scaling.type") == "linear":
        factor = float(header.arch_value("rope.scaling.factor"))
        config["rope_scaling"] = {"rope_type": "linear", "factor": factor}
    return config


def gemma_weights(
    header: GGUFHeader, dtype: str, progress: Progress
) -> tuple[dict[str, mx.array], dict[str, Any] | None]:
    """mlx-lm weights in `dtype`, plus the config `quantization` dict for "quantized"."""
    reader = gguf.GGUFReader(str(header.path))
    float_dtype = mx.bfloat16 if dtype == "quantized" else getattr(mx, dtype)
    weights: dict[str, mx.array] = {}
    quantization = {"group_size": GROUP_SIZE, "bits": REQUANT_BITS, "mode": "affine"}
    for index, tensor in enumerate(reader.tensors):
        if index % 32 == 0:
            progress(f"dequantizing tensors ({index}/{len(reader.tensors)})", 0.1 + 0.6 * index / len(reader.tensors))
        values = _dequantize(tensor)
        if tensor.name.endswith("norm.weight"):
            # llama.cpp stores Gemma norms as (1 + w); mlx-lm's Gemma RMSNorm adds the 1 itself.
            values = values - 1.0
        name = module_name(tensor.name)
        if dtype == "quantized" and values.ndim == 2 and tensor.tensor_type.name not in ("F32", "F16", "BF16"):
            module = name.removesuffix(".weight")
            weight, scales, biases = mx.quantize(mx.array(values), group_size=GROUP_SIZE, bits=REQUANT_BITS)
            weights.update({name: weight, f"{module}.scales": scales.astype(float_dtype),
                            f"{module}.biases": biases.astype(float_dtype)})
        else:
            weights[name] = mx.array(values).astype(float_dtype)
        mx.eval(weights)  # materialize now so the float32 copies can be freed
    return weights, (quantization if dtype == "quantized" else None)


def _dequantize(tensor: Any) -> np.ndarray:
    """float32 values in numpy (row-major) order: GGUF's shape reversed."""
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    shape = tuple(int(d) for d in reversed(tensor.shape))
    return np.asarray(values, dtype=np.float32).reshape(shape)
