"""Quantized blocks without a model: every path (gather, write-back, spill, restore, fork,
copy-on-write) gives back exactly the dequantized values of the K/V first written."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from engine.kv.block_writer import BlockWriter
from engine.kv.batch_cache import cache_arrays
from engine.kv.kv_store import KVBlockStore
from engine.kv.spill import SpillError, SpillStore
from pool import AgentBlocks, BlockPool, ModelCacheSpec

FORMATS = [(8, 64), (8, 32), (4, 64), (4, 32)]


def spec_for(bits: int, group: int, dtype: str = "float32") -> ModelCacheSpec:
    return ModelCacheSpec(n_layers=2, n_kv_heads=2, head_dim=64, dtype=dtype, block_tokens=4,
                          layer_types=("global", "sliding"), sliding_window=8, kv_bits=bits, kv_group_size=group)


def float_kv(total: int, dtype: mx.Dtype, seed: int = 0) -> tuple[mx.array, mx.array]:
    """The float K/V a model would have computed for tokens [0, total): ``[H, T, D]``."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((2, 2, total, 64), dtype=np.float32)
    kv = mx.array(data).astype(dtype)
    return kv[0], kv[1]


def dequantized(spec: ModelCacheSpec, x: mx.array) -> np.ndarray:
    """What a block holding ``x`` must give back: one quantize, one dequantize."""
    parts = mx.quantize(x, group_size=spec.kv_group_size, bits=spec.kv_bits)
    return np.array(mx.dequantize(*parts, group_size=spec.kv_group_size, bits=spec.kv_bits).astype(mx.float32))


class Turns:
    """A context grown turn by turn, as the engine writes it: each turn's caches hold
    the dequantized past plus the turn's own float tokens."""

    def __init__(self, spec: ModelCacheSpec, num_blocks: int = 64) -> None:
        self.spec = spec
        self.pool = BlockPool(spec, num_blocks)
        self.store = KVBlockStore(spec, num_blocks)
        self.writer = BlockWriter(self.pool, self.store)
        self.keys, self.values = float_kv(40, getattr(mx, spec.dtype))

    def turn(self, agent: AgentBlocks, total: int) -> None:
        n0 = agent.total_tokens
        past = self.store.gather(agent)[0] if n0 else None
        caches = []
        for layer_id in range(self.spec.n_layers):
            start = total - self.spec.tokens_kept(layer_id, total)
            old = max(0, n0 - start)  # tokens of this layer's cache that come from the blocks
            k, v = self.keys[None, :, start + old : total], self.values[None, :, start + old : total]
            if past is not None and old:
                held_k, held_v = cache_arrays(past[layer_id])  # the valid tokens (buffers have room to grow)
                k = mx.concatenate([held_k[None, :, -old:], k], axis=2)
                v = mx.concatenate([held_v[None, :, -old:], v], axis=2)
            caches.append(self.store.make_cache(layer_id, k, v, total))
        reserved: dict = {}
        self.writer.reserve(agent, reserved, total)
        self.writer.write_back(agent, reserved, caches, list(range(total)))

    def expected(self, layer_id: int, total: int) -> tuple[np.ndarray, np.ndarray]:
        start = total - self.spec.tokens_kept(layer_id, total)
        return (dequantized(self.spec, self.keys[:, start:total]), dequantized(self.spec, self.values[:, start:total]))

    def check(self, agent: AgentBlocks) -> None:
        caches, _ = self.store.gather(agent)
        for layer_id, cache in enumerate(caches):
            keys, values = self.expected(layer_id, agent.total_tokens)
            held_k, held_v = cache_arrays(cache)
            assert np.array_equal(np.array(held_k.astype(mx.float32)), keys), layer_id
            assert np.array_equal(np.array(held_v.astype(mx.float32)), values), layer_id
            assert cache.keys.dtype == getattr(mx, self.spec.dtype)


@pytest.mark.parametrize(("bits", "group"), FORMATS)
def test_turns_gather_exactly_the_first_quantization(bits, group):
    turns = Turns(spec_for(bits, group))
    agent = AgentBlocks("a")
    for total in (3, 6, 11, 14):  # partial blocks filled, sliding window (8) shifted past old tokens
        turns.turn(agent, total)
        agent.check(turns.spec)
        turns.check(agent)
    turns.pool.check_invariants()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_models_keep_their_dtype(dtype):
    turns = Turns(spec_for(8, 64, dtype))
    agent = AgentBlocks("a")
    for total in (5, 10):
        turns.turn(agent, total)
        turns.check(agent)


@pytest.mark.parametrize(("bits", "group"), [(8, 64), (4, 32)])
def test_spill_and_restore_keep_the_stored_bytes(bits, group, tmp_path):
    turns = Turns(spec_for(bits, group))
    agent = AgentBlocks("a")
    for total in (6, 13):
        turns.turn(agent, total)
    spill = SpillStore(tmp_path, turns.spec)
    _, num_bytes = spill.save("a", agent.token_ids, turns.store.read_layers(agent))
    loaded = spill.load("a", expected=agent.token_ids)
    stored = sum(turns.spec.tokens_kept(i, 13) for i in range(2)) * 2 * 2 * turns.spec.bytes_per_token_head
    assert loaded.num_bytes == stored and num_bytes == stored + 13 * 4  # quantized on disk, plus token ids

    blocks = agent.all_blocks()
    agent.clear()
    turns.pool.free(blocks, "a")
    agent.total_tokens = 0
    reserved: dict = {}
    turns.writer.reserve(agent, reserved, 13)
    turns.writer.write_layers(agent, reserved, loaded.layers, 13, loaded.token_ids)
    turns.check(agent)


def test_a_spill_file_of_another_kv_format_is_refused(tmp_path):
    turns = Turns(spec_for(8, 64))
    agent = AgentBlocks("a")
    turns.turn(agent, 6)
    SpillStore(tmp_path, turns.spec).save("a", agent.token_ids, turns.store.read_layers(agent))
    for other in (spec_for(4, 64), spec_for(8, 32), spec_for(8, 64).model_copy(update={"kv_bits": 16})):
        with pytest.raises(SpillError, match="KV format"):
            SpillStore(tmp_path, other).load("a", expected=agent.token_ids)


def test_fork_and_copy_on_write_keep_the_source_exact():
    turns = Turns(spec_for(4, 64))
    source = AgentBlocks("source")
    turns.turn(source, 6)
    fork = turns.pool.fork(source, "fork")
    turns.check(fork)
    turns.turn(source, 10)  # the shared partial block is copied, then written
    assert turns.writer.copied.num_blocks == 1
    turns.check(source)
    turns.check(fork)
    turns.turn(fork, 9)
    turns.check(fork)
    turns.pool.check_invariants()


def test_pool_snapshot_carries_the_kv_format_and_its_bytes():
    snap = BlockPool(spec_for(4, 32), 8).snapshot()
    assert (snap.kv_format, snap.bytes_per_block) == ("q4/g32", 2 * 2 * 4 * spec_for(4, 32).bytes_per_token_head)


def test_kv_bits_reach_the_settings_and_the_experiments():
    from blockpool.cli import build_parser
    from tui.cli import parse_settings

    assert parse_settings(["--kv-bits", "8"]).kv_bits == 8
    assert parse_settings([]).kv_bits == 16
    assert build_parser().parse_args(["exp006", "--kv-bits", "16,4"]).kv_bits == [16, 4]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["exp005", "--kv-bits", "6"])


HOST_PATHS = [(bits, group, dtype, path) for bits, group in FORMATS for dtype in ("float32", "float16", "bfloat16")
              for path in ("numba", "numpy") if not (path == "numpy" and dtype == "bfloat16")]


@pytest.mark.parametrize(("bits", "group", "dtype", "path"), HOST_PATHS)
def test_host_and_mlx_dequantize_paths_gather_the_same_bytes(bits, group, dtype, path, monkeypatch):
    """The CPU's host paths (the fused kernel; NumPy, its fallback) and the MLX-ops path GPUs
    take give back the same bits (all run here), over partial blocks and a sliding window."""
    if path == "numpy":
        monkeypatch.setenv("BLOCKPOOL_KV_KERNEL", "numpy")
    turns = Turns(spec_for(bits, group, dtype))
    assert turns.store.host_dequantize and turns.store.dequant.name == path, turns.store.dequant
    agent = AgentBlocks("a")
    for total in (6, 13):
        turns.turn(agent, total)
    mlx_ops = KVBlockStore(turns.spec, 64, host_dequantize=False)
    for layer_id in range(turns.spec.n_layers):
        for block in agent.layer_blocks(layer_id):
            mlx_ops.write(block, turns.store.read_tokens([block], 0, block.num_tokens), 0)  # as stored
    assert not mlx_ops.host_dequantize
    for ours, theirs in zip(turns.store.gather(agent)[0], mlx_ops.gather(agent)[0]):
        for a, b in zip(cache_arrays(ours), cache_arrays(theirs)):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert np.array_equal(np.array(a.view(mx.uint16) if a.dtype == mx.bfloat16 else a),
                                  np.array(b.view(mx.uint16) if b.dtype == mx.bfloat16 else b))


def test_a_kernel_that_gives_wrong_values_is_refused(monkeypatch, capsys):
    """The probe compares the kernel with mx.dequantize before any gather trusts it: a kernel
    that is off by one rounding step is refused with a reason, and NumPy takes over."""
    from engine.kv import dequant_kernels, host_dequant

    real = dequant_kernels.dequantize_segments

    def off_by_one(kind, bits, group, q, scales, biases, starts, counts, out):
        real(kind, bits, group, q, scales, biases, starts, counts, out)
        out.view(np.uint32)[3] += 1

    monkeypatch.setattr(dequant_kernels, "dequantize_segments", off_by_one)
    choice = host_dequant.choose(spec_for(8, 64))
    assert choice.kernel is None and "differ from mx.dequantize" in choice.reason
    assert "dequantize with NumPy" in capsys.readouterr().err


def test_without_numba_quantized_gathers_fall_back_to_numpy_with_one_warning():
    """A machine where numba does not import (no wheel for it, a broken install) still runs
    quantized blocks: the store says why on stderr, once, and gathers MLX's exact values."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, mlx.core as mx\n"
        "from tests.test_kv_quant_store import Turns, spec_for\n"
        "from pool import AgentBlocks\n"
        "turns = Turns(spec_for(8, 64)); turns2 = Turns(spec_for(4, 32))\n"
        "assert turns.store.dequant.name == 'numpy', turns.store.dequant\n"
        "agent = AgentBlocks('a'); turns.turn(agent, 6); turns.turn(agent, 13)\n"
        "print('ok', turns.store.gather(agent)[1].num_tokens)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "13"]
    warnings = [line for line in done.stderr.splitlines() if "dequantize with NumPy" in line]
    assert len(warnings) == 1 and "numba is not importable" in warnings[0], done.stderr
