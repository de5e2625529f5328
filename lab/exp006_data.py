"""EXP-006's data: the synthetic model's KV shape, the samples of each context, the whole run (no MLX)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pool import ModelCacheSpec
from telemetry import LatencyStats, latency_stats


@dataclass(frozen=True)
class SyntheticShape:
    """KV geometry of the synthetic model; the defaults are Gemma 3 12B's."""

    n_layers: int = 48
    n_kv_heads: int = 8
    head_dim: int = 256
    block_tokens: int = 256
    sliding_window: int = 1024
    global_every: int = 6  # layer i is global when i % global_every == global_every - 1
    dtype: str = "float16"
    kv_bits: int = 16  # 8 / 4: blocks quantized, gathers dequantize into float16 caches

    def spec(self) -> ModelCacheSpec:
        layer_types = tuple(
            "global" if i % self.global_every == self.global_every - 1 else "sliding"
            for i in range(self.n_layers)
        )
        has_sliding = "sliding" in layer_types
        return ModelCacheSpec(
            n_layers=self.n_layers,
            n_kv_heads=self.n_kv_heads,
            head_dim=self.head_dim,
            dtype=self.dtype,
            block_tokens=self.block_tokens,
            layer_types=layer_types,
            sliding_window=self.sliding_window if has_sliding else None,
            kv_bits=self.kv_bits,
        )


@dataclass
class ContextResult:
    """Every sample taken for one context size."""

    context_tokens: int
    num_blocks: int
    total_bytes: int  # of the gathered float caches: what the plain copy moves
    kv_format: str = "float16"
    gather_ms: list[float] = field(default_factory=list)
    copy_ms: list[float] = field(default_factory=list)
    concat_ms: list[float] = field(default_factory=list)
    warmup_gather_ms: list[float] = field(default_factory=list)

    @property
    def gather(self) -> LatencyStats:
        return latency_stats(self.gather_ms)

    @property
    def copy(self) -> LatencyStats:
        return latency_stats(self.copy_ms)

    @property
    def concat(self) -> LatencyStats:
        return latency_stats(self.concat_ms)

    @property
    def copy_bound_ratio(self) -> float | None:
        """p95(gather) / p95(copy): 1.0 means the gather runs at memory-copy speed."""
        gather, copy = self.gather.p95, self.copy.p95
        return None if gather is None or not copy else gather / copy

    def to_json(self) -> dict[str, object]:
        return {
            "context_tokens": self.context_tokens,
            "kv_format": self.kv_format,
            "num_blocks": self.num_blocks,
            "total_bytes": self.total_bytes,
            "gather_ms": self.gather_ms,
            "copy_ms": self.copy_ms,
            "concat_ms": self.concat_ms,
            "warmup_gather_ms": self.warmup_gather_ms,
        }


@dataclass
class Exp006Result:
    """``contexts``: the first KV format's (the verdict's); ``by_format``: every format's, in order."""

    shape: SyntheticShape
    runs: int
    contexts: list[ContextResult]
    verdict_context: int
    machine: dict[str, object]
    artifacts: list[Path] = field(default_factory=list)
    by_format: dict[str, list[ContextResult]] = field(default_factory=dict)

    @property
    def headline(self) -> ContextResult:
        return next(c for c in self.contexts if c.context_tokens == self.verdict_context)
