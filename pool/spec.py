"""The shape of a model's KV cache, as far as block bookkeeping needs it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pool import model_inspect

LayerType = Literal["global", "sliding"]
# Strict so that True or 2.5 is rejected instead of silently coerced.
PositiveInt = Annotated[int, Field(strict=True, gt=0)]

ITEMSIZE_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}
KV_BITS = (16, 8, 4)  # 16: blocks hold the model's float K/V; 8 / 4: mx.quantize's affine layout
KV_GROUP_SIZES = (32, 64)


class ModelCacheSpec(BaseModel):
    """Per-layer KV geometry of a model plus the pool's block size.

    Global layers keep every token; sliding layers keep only their last
    `sliding_window` tokens, re-packed from the start of their first block.
    """

    model_config = ConfigDict(frozen=True)

    n_layers: PositiveInt
    n_kv_heads: PositiveInt
    head_dim: PositiveInt
    dtype: str
    block_tokens: PositiveInt = 256
    layer_types: tuple[LayerType, ...]
    sliding_window: PositiveInt | None = None
    kv_bits: Annotated[int, Field(strict=True)] = 16
    kv_group_size: Annotated[int, Field(strict=True)] = 64

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, dtype: str) -> str:
        if dtype not in ITEMSIZE_BYTES:
            raise ValueError(
                f"unsupported dtype {dtype!r}; expected one of {sorted(ITEMSIZE_BYTES)}"
            )
        return dtype

    @field_validator("kv_bits")
    @classmethod
    def _known_bits(cls, kv_bits: int) -> int:
        if kv_bits not in KV_BITS:
            raise ValueError(f"kv_bits={kv_bits!r} is not supported; use one of {list(KV_BITS)} (16: float blocks)")
        return kv_bits

    @field_validator("kv_group_size")
    @classmethod
    def _known_group(cls, kv_group_size: int) -> int:
        if kv_group_size not in KV_GROUP_SIZES:
            raise ValueError(f"kv_group_size={kv_group_size!r} is not supported; use one of {list(KV_GROUP_SIZES)}")
        return kv_group_size

    @model_validator(mode="after")
    def _consistent(self) -> ModelCacheSpec:
        if len(self.layer_types) != self.n_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries "
                f"but n_layers is {self.n_layers}"
            )
        has_sliding = "sliding" in self.layer_types
        if has_sliding and self.sliding_window is None:
            raise ValueError(
                f"sliding_window is required: layers {list(self.sliding_layer_ids)} "
                "are sliding"
            )
        if not has_sliding and self.sliding_window is not None:
            raise ValueError(
                f"sliding_window={self.sliding_window} given but no layer is sliding"
            )
        if self.quantized and self.head_dim % self.kv_group_size:
            raise ValueError(
                f"head_dim={self.head_dim} is not a multiple of kv_group_size={self.kv_group_size}: "
                f"{self.kv_bits}-bit blocks quantize each head's vector in whole groups; "
                f"use kv_group_size={next((g for g in KV_GROUP_SIZES if self.head_dim % g == 0), 32)} or kv_bits=16"
            )
        return self

    @property
    def quantized(self) -> bool:
        """Whether blocks hold quantized K/V (packed values, scales, biases) instead of floats."""
        return self.kv_bits != 16

    @property
    def kv_format(self) -> str:
        """The block format in words: ``float16``, ``q8/g64``, ``q4/g32`` ..."""
        return self.dtype if not self.quantized else f"q{self.kv_bits}/g{self.kv_group_size}"

    @property
    def bytes_per_token_head(self) -> int:
        """Bytes one token of one KV head takes in a block, for K or V alone.

        Quantized: ``head_dim * bits / 8`` packed bytes plus one scale and one bias
        (in the model's dtype, as ``mx.quantize`` returns them) per group."""
        if not self.quantized:
            return self.head_dim * self.itemsize
        groups = self.head_dim // self.kv_group_size
        return self.head_dim * self.kv_bits // 8 + 2 * groups * self.itemsize

    @property
    def itemsize(self) -> int:
        """Bytes per cached element."""
        return ITEMSIZE_BYTES[self.dtype]

    @property
    def bytes_per_block(self) -> int:
        """Bytes of K plus V for one block of one layer, as stored (quantized: all three parts)."""
        return 2 * self.n_kv_heads * self.block_tokens * self.bytes_per_token_head

    @property
    def global_layer_ids(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types) if t == "global")

    @property
    def sliding_layer_ids(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types) if t == "sliding")

    def is_sliding(self, layer_id: int) -> bool:
        self._check_layer(layer_id)
        return self.layer_types[layer_id] == "sliding"

    def tokens_kept(self, layer_id: int, num_tokens: int) -> int:
        """Tokens a layer stores for a context of `num_tokens` tokens."""
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        if self.is_sliding(layer_id):
            assert self.sliding_window is not None  # guaranteed by validation
            return min(num_tokens, self.sliding_window)
        return num_tokens

    def max_blocks_for_layer(self, layer_id: int, num_tokens: int) -> int:
        """Blocks a layer needs for a context of `num_tokens` tokens."""
        return -(-self.tokens_kept(layer_id, num_tokens) // self.block_tokens)

    def blocks_for_context(self, num_tokens: int) -> int:
        """Blocks all layers together need for a context of `num_tokens` tokens."""
        return sum(self.max_blocks_for_layer(i, num_tokens) for i in range(self.n_layers))

    def _check_layer(self, layer_id: int) -> None:
        if not 0 <= layer_id < self.n_layers:
            raise ValueError(f"layer_id {layer_id} outside [0, {self.n_layers})")

    @classmethod
    def from_model(
        cls, model: Any, *, block_tokens: int = 256, kv_bits: int = 16, kv_group_size: int = 64
    ) -> ModelCacheSpec:
        """Read the spec off an mlx-lm model (no forward pass, no weights needed).

        Layer types come from `model.make_cache()` when present, never from
        the model type. Raises UnsupportedCacheError for layers that are
        not plain KVCache / RotatingKVCache. ``kv_bits`` 8 or 4 stores blocks
        quantized in groups of ``kv_group_size`` (16: the model's float K/V).
        """
        layer_types, window = model_inspect.cache_layout(model)
        n_kv_heads, head_dim = model_inspect.kv_shape(model)
        return cls(
            n_layers=len(layer_types),
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            dtype=model_inspect.param_dtype(model),
            block_tokens=block_tokens,
            layer_types=layer_types,
            sliding_window=window,
            kv_bits=kv_bits,
            kv_group_size=kv_group_size,
        )
