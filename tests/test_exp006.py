"""EXP-006 on tiny shapes: the gather it times is correct, and its artifacts hold what they say."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from blockpool import cli
from engine import BlockPoolBatchEngine
from lab.exp006 import ContextResult, SyntheticShape, build_agent_blocks
from lab.exp006_report import scaling_steps, verdict
from pool import BlockPool
from telemetry import LatencyStats

TINY = SyntheticShape(n_layers=6, n_kv_heads=2, head_dim=64, block_tokens=64, sliding_window=128, global_every=3)
TINY_FLAGS = ["--layers", "6", "--kv-heads", "2", "--head-dim", "64", "--block-tokens", "64", "--window", "128",
              "--global-every", "3"]


def tiny_bytes(context_tokens: int) -> int:
    """Layers 2 and 5 are global (all tokens), the other 4 keep 128; K and V, 2 heads x 64, float16."""
    tokens = 2 * context_tokens + 4 * min(context_tokens, 128)
    return tokens * 2 * 2 * 64 * 2


def test_default_shape_is_gemma3_12b() -> None:
    spec = SyntheticShape().spec()
    assert (spec.n_layers, spec.n_kv_heads, spec.head_dim, spec.dtype) == (48, 8, 256, "float16")
    assert spec.global_layer_ids == tuple(range(5, 48, 6))
    assert len(spec.sliding_layer_ids) == 40 and spec.sliding_window == 1024
    assert spec.blocks_for_context(8192) == 8 * 32 + 40 * 4  # the seed's 8K: 832 MiB
    assert spec.blocks_for_context(8192) * spec.bytes_per_block == 832 * 2**20


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_seed_snippet_blocks_gather_to_the_same_tensors_as_concatenate(bits: int) -> None:
    spec = replace(TINY, kv_bits=bits).spec()  # quantized: both dequantize the same stored parts
    pool = BlockPool(spec, spec.blocks_for_context(200))
    engine = BlockPoolBatchEngine(None, None, pool, spec)
    agent = build_agent_blocks(pool, 200)
    assert [agent.num_layer_blocks(i) for i in range(6)] == [2, 2, 4, 2, 2, 4]
    engine.kv_store.fill_random([b.block_id for b in agent.all_blocks()])
    caches = engine._reconstruct_cache(agent)
    for layer_id, cache in enumerate(caches):
        kept = spec.tokens_kept(layer_id, 200)
        views = [engine.kv_store.block_arrays(b.block_id) for b in agent.layer_blocks(layer_id)]
        expected_k = mx.concatenate([v["k"] for v in views], axis=1)[None, :, :kept]
        expected_v = mx.concatenate([v["v"] for v in views], axis=1)[None, :, :kept]
        assert np.array_equal(np.array(cache.keys[..., :kept, :]), np.array(expected_k))
        assert np.array_equal(np.array(cache.values[..., :kept, :]), np.array(expected_v))


@pytest.mark.parametrize(
    ("p95", "std", "expected"),
    [(4.9, 0.1, "GO"), (4.9, 0.5, "CONDITIONAL"), (5.0, 0.1, "CONDITIONAL"), (10.0, 0.1, "CONDITIONAL"),
     (10.01, 0.1, "NO-GO")],
)
def test_verdict_follows_the_seed_thresholds(p95: float, std: float, expected: str) -> None:
    stats = LatencyStats(count=100, min=1.0, p50=2.0, p95=p95, p99=p95, mean=2.0, std=std, max=p95)
    assert verdict(stats) == expected


def test_small_run_writes_artifacts_that_hold_what_they_say(tmp_path, capsys) -> None:
    code = cli.main(["exp006", "--out", str(tmp_path), "--runs", "7", "--contexts", "512,256",
                     "--concat-runs", "2", "--warmup", "1", "--kv-bits", "16,8,4", *TINY_FLAGS])
    assert code == 0
    every = json.loads((tmp_path / "exp_006_timings.json").read_text())
    assert [(t["kv_format"], t["context_tokens"]) for t in every] == [
        (f, c) for f in ("float16", "q8/g64", "q4/g64") for c in (256, 512)]  # every format asked for
    timings = [t for t in every if t["kv_format"] == "float16"]
    for t in every:  # quantized gathers write the same float16 bytes
        assert t["total_bytes"] == tiny_bytes(t["context_tokens"])
        assert len(t["gather_ms"]) == 7 and len(t["copy_ms"]) == 7 and len(t["concat_ms"]) == 2
        assert all(x > 0 for x in t["gather_ms"] + t["copy_ms"])
    assert (tmp_path / "exp_006_histogram.png").read_bytes()[:4] == b"\x89PNG"  # make installs the experiments extra

    report = (tmp_path / "EXP-006-block-gather-benchmark.md").read_text()
    head = timings[-1]  # no 8K here: the verdict is on the largest context
    p95 = float(np.percentile(head["gather_ms"], 95))
    ratio = p95 / float(np.percentile(head["copy_ms"], 95))
    stats = LatencyStats(count=7, p95=p95, mean=float(np.mean(head["gather_ms"])), std=float(np.std(head["gather_ms"])))
    assert f"**Verdict: {verdict(stats)}**" in report
    assert f"gather p95 {p95:.2f} ms for 512 tokens" in report
    assert "MLX Device(cpu" in report and "CPU " in report
    assert f"p95(gather) / p95(copy) = {ratio:.2f}" in report
    assert "| Metric | Value | Target | Status |" in report
    assert f"| p95 | {p95:.2f} ms | < 5 ms |" in report
    assert "| 256 -> 512 |" in report  # the scaling table
    assert "| q4/g64 | 512 |" in report  # the formats table
    assert "Verdict:" in capsys.readouterr().out


def test_without_matplotlib_the_histogram_is_text_and_the_cli_says_what_to_install(tmp_path, capsys,
                                                                                   monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code = cli.main(["exp006", "--out", str(tmp_path), "--runs", "2", "--contexts", "256", "--concat-runs", "1",
                     "--warmup", "0", *TINY_FLAGS])
    assert code == 0
    assert not (tmp_path / "exp_006_histogram.png").exists()
    assert "gather" in (tmp_path / "exp_006_histogram.txt").read_text()
    assert "pip install 'blockpool[experiments]'" in capsys.readouterr().err


def test_scaling_is_judged_against_bytes_not_tokens() -> None:
    small = ContextResult(4096, 288, 288, gather_ms=[10.0, 10.0])
    large = ContextResult(8192, 416, 416, gather_ms=[14.4, 14.4])
    (step,) = scaling_steps([small, large])
    assert step.bytes_ratio == pytest.approx(416 / 288)
    assert step.normalized == pytest.approx(14.4 / 10 / (416 / 288))
    assert step.linear
