"""ModelCacheSpec.from_model: the cache shape read from mlx-lm models (llama, gemma3, qwen2; unsupported caches)."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_map_with_path
from mlx_lm.models import gemma3_text, llama, qwen2
from mlx_lm.models.cache import ArraysCache, KVCache, QuantizedKVCache, RotatingKVCache

from pool import BlockPool, ModelCacheSpec, UnsupportedCacheError

# -- from_model ----------------------------------------------------------------


def tiny_llama(**overrides: object) -> llama.Model:
    args = dict(
        model_type="llama", hidden_size=32, num_hidden_layers=3, intermediate_size=64,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=50,
    )
    args.update(overrides)
    return llama.Model(llama.ModelArgs(**args))


def test_from_model_llama_all_global() -> None:
    spec = ModelCacheSpec.from_model(tiny_llama(), block_tokens=16)
    assert spec.n_layers == 3
    assert spec.layer_types == ("global",) * 3
    assert spec.sliding_window is None
    assert (spec.n_kv_heads, spec.head_dim) == (2, 8)  # 32 // 4
    assert spec.dtype == "float32"
    assert spec.block_tokens == 16


def test_from_model_explicit_head_dim_and_dtype() -> None:
    model = tiny_llama(head_dim=16)
    model.set_dtype(mx.bfloat16)
    spec = ModelCacheSpec.from_model(model)
    assert (spec.head_dim, spec.dtype) == (16, "bfloat16")


def test_from_model_quantized_prefers_activation_dtype() -> None:
    model = tiny_llama()
    model.set_dtype(mx.float16)
    nn.quantize(model, group_size=32, bits=4)
    # float16 scales/biases (and uint32 weights) come first; activations run in float32.
    model.update(tree_map_with_path(
        lambda name, p: p if name.endswith(("scales", "biases")) or p.dtype == mx.uint32
        else p.astype(mx.float32),
        model.parameters(),
    ))
    assert model.model.embed_tokens.scales.dtype == mx.float16
    assert ModelCacheSpec.from_model(model).dtype == "float32"


def test_from_model_without_make_cache() -> None:
    model = qwen2.Model(qwen2.ModelArgs(
        model_type="qwen2", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
        num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-5, vocab_size=50,
    ))
    assert not hasattr(model, "make_cache")
    spec = ModelCacheSpec.from_model(model)
    assert spec.layer_types == ("global", "global")
    assert (spec.n_kv_heads, spec.head_dim) == (1, 8)


def test_from_model_gemma3_follows_make_cache() -> None:
    model = gemma3_text.Model(gemma3_text.ModelArgs(
        model_type="gemma3_text", hidden_size=32, num_hidden_layers=7, intermediate_size=64,
        num_attention_heads=2, head_dim=16, num_key_value_heads=1, vocab_size=50,
        sliding_window=64, sliding_window_pattern=3,
    ))
    spec = ModelCacheSpec.from_model(model, block_tokens=32)
    expected = tuple(
        "sliding" if isinstance(c, RotatingKVCache) else "global" for c in model.make_cache()
    )
    assert spec.layer_types == expected
    assert spec.global_layer_ids == (2, 5)
    assert spec.sliding_window == 64
    assert (spec.n_kv_heads, spec.head_dim) == (1, 16)
    assert spec.max_blocks_for_layer(0, 1000) == 2


class FakeModel:
    """Just enough of an mlx-lm model for from_model."""

    def __init__(self, caches: list[object]) -> None:
        self.caches = caches
        self.layers = [object()] * len(caches)
        self.args = llama.ModelArgs(
            model_type="fake", hidden_size=32, num_hidden_layers=len(caches),
            intermediate_size=64, num_attention_heads=4, rms_norm_eps=1e-5, vocab_size=10,
        )

    def make_cache(self) -> list[object]:
        return self.caches

    def parameters(self) -> dict[str, object]:
        return {"norm": {"weight": mx.zeros((4,), dtype=mx.float16)}}


@pytest.mark.parametrize(
    ("cache", "name"),
    [(ArraysCache(2), "ArraysCache"), (QuantizedKVCache(), "QuantizedKVCache")],
)
def test_from_model_unsupported_cache(cache: object, name: str) -> None:
    with pytest.raises(UnsupportedCacheError, match=rf"layer 1 uses {name}; only KVCache"):
        ModelCacheSpec.from_model(FakeModel([KVCache(), cache]))


def test_from_model_rotating_with_keep_unsupported() -> None:
    with pytest.raises(UnsupportedCacheError, match="layer 0 uses RotatingKVCache with keep=4"):
        ModelCacheSpec.from_model(FakeModel([RotatingKVCache(max_size=64, keep=4)]))


def test_from_model_several_windows_rejected() -> None:
    caches = [RotatingKVCache(max_size=64), RotatingKVCache(max_size=128), KVCache()]
    with pytest.raises(UnsupportedCacheError, match=r"several windows \[64, 128\]"):
        ModelCacheSpec.from_model(FakeModel(caches))


def test_unsupported_cache_error_is_value_error() -> None:
    assert issubclass(UnsupportedCacheError, ValueError)


def test_from_model_fake_uses_args_fallbacks() -> None:
    spec = ModelCacheSpec.from_model(FakeModel([KVCache(), RotatingKVCache(max_size=100)]))
    # num_key_value_heads falls back to num_attention_heads (4); head_dim to 32 // 4.
    assert (spec.n_kv_heads, spec.head_dim, spec.dtype) == (4, 8, "float16")
    assert spec.layer_types == ("global", "sliding")
    assert spec.sliding_window == 100


def test_from_model_without_args_reads_attention() -> None:
    class Attn:
        n_kv_heads, head_dim = 3, 24

    class Layer:
        self_attn = Attn()

    model = FakeModel([KVCache()])
    del model.args
    model.layers = [Layer()]
    spec = ModelCacheSpec.from_model(model)
    assert (spec.n_kv_heads, spec.head_dim) == (3, 24)


def _quant_spec(**kw: object) -> ModelCacheSpec:
    base: dict = dict(n_layers=2, n_kv_heads=8, head_dim=128, dtype="float16", layer_types=("global", "global"))
    return ModelCacheSpec(**{**base, **kw})


def test_bytes_per_block_counts_packed_values_scales_and_biases() -> None:
    # 256 tokens x 8 heads x (K + V); per token-head: 128 halves, or 128*bits/8 bytes + a scale and a bias per group
    assert _quant_spec().bytes_per_block == 2 * 8 * 256 * 128 * 2
    assert _quant_spec(kv_bits=8).bytes_per_block == 2 * 8 * 256 * (128 + 2 * 2 * 2)
    assert _quant_spec(kv_bits=4, kv_group_size=32).bytes_per_block == 2 * 8 * 256 * (64 + 2 * 4 * 2)
    assert (_quant_spec().kv_format, _quant_spec(kv_bits=4, kv_group_size=32).kv_format) == ("float16", "q4/g32")


def test_a_memory_budget_holds_more_quantized_blocks() -> None:
    blocks = {bits: BlockPool.from_memory_budget(_quant_spec(kv_bits=bits), 512 << 20).total_blocks
              for bits in (16, 8, 4)}
    # float16 scales and biases per 64 values cost 8 of every 136 bytes at 8 bits: 1.88x, not 2x
    assert blocks[8] / blocks[16] >= 1.88 and blocks[4] / blocks[16] >= 3.5, blocks


@pytest.mark.parametrize(("kw", "message"), [
    ({"kv_bits": 3}, "kv_bits=3 is not supported"),
    ({"kv_bits": True}, "kv_bits"),
    ({"kv_group_size": 128}, "kv_group_size=128 is not supported"),
    ({"kv_bits": 8, "head_dim": 48}, "head_dim=48 is not a multiple of kv_group_size=64"),
])
def test_bad_kv_formats_are_named(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _quant_spec(**kw)


def test_float_spec_json_without_kv_fields_still_loads() -> None:
    """Spill files written before quantized blocks carry a spec without kv_bits: float blocks."""
    data = json.loads(_quant_spec().model_dump_json())
    del data["kv_bits"], data["kv_group_size"]
    assert ModelCacheSpec.model_validate(data) == _quant_spec()
