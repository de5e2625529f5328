"""The shape of a model's KV cache, as far as block bookkeeping needs it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pool import model_inspect

LayerType = Literal["global", "sliding"]
# Strict so that True or 2.5 is rejected instead of silently coerced.
PositiveInt = Annotated[int, Field(strict=True, gt=0)]

ITEMSIZE_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}


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

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, dtype: str) -> str:
        if dtype not in ITEMSIZE_BYTES:
            raise ValueError(
                f"unsupported dtype {dtype!r}; expected one of {sorted(ITEMSIZE_BYTES)}"
            )
        return dtype

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
        return self

    @property
    def itemsize(self) -> int:
        """Bytes per cached element."""
        return ITEMSIZE_BYTES[self.dtype]

    @property
    def bytes_per_block(self) -> int:
        """Bytes of K plus V for one block of one layer."""
        return 2 * self.n_kv_heads * self.head_dim * self.block_tokens * self.itemsize

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
    def from_model(cls, model: Any, *, block_tokens: int = 256) -> ModelCacheSpec:
        """Read the spec off an mlx-lm model (no forward pass, no weights needed).

        Layer types come from `model.make_cache()` when present, never from
        the model type. Raises UnsupportedCacheError for layers that are
        not plain KVCache / RotatingKVCache.
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
        )
