"""ModelCacheSpec: validation, sizes, per-layer block counts (from_model: test_spec_from_model.py)."""

from __future__ import annotations

import pytest

from pool import ModelCacheSpec


def make_spec(**overrides: object) -> ModelCacheSpec:
    fields: dict[str, object] = dict(
        n_layers=4,
        n_kv_heads=2,
        head_dim=8,
        dtype="float16",
        block_tokens=256,
        layer_types=("sliding", "sliding", "sliding", "global"),
        sliding_window=512,
    )
    fields.update(overrides)
    return ModelCacheSpec(**fields)


# -- validation ------------------------------------------------------------


@pytest.mark.parametrize("name", ["n_layers", "n_kv_heads", "head_dim", "block_tokens"])
@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_ints_rejected(name: str, bad: int) -> None:
    with pytest.raises(ValueError, match=name):
        make_spec(**{name: bad})


def test_float_int_rejected() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        make_spec(head_dim=8.5)


def test_layer_types_length_must_match() -> None:
    with pytest.raises(ValueError, match="layer_types has 3 entries but n_layers is 4"):
        make_spec(layer_types=("global",) * 3)


def test_unknown_layer_type_rejected() -> None:
    with pytest.raises(ValueError, match="layer_types"):
        make_spec(layer_types=("global", "local", "global", "global"))


def test_sliding_layers_need_window() -> None:
    with pytest.raises(ValueError, match=r"sliding_window is required: layers \[0, 1, 2\]"):
        make_spec(sliding_window=None)


def test_window_without_sliding_layers_rejected() -> None:
    with pytest.raises(ValueError, match="sliding_window=512 given but no layer is sliding"):
        make_spec(layer_types=("global",) * 4)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="sliding_window"):
        make_spec(sliding_window=0)


def test_unknown_dtype_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        make_spec(dtype="int8")


def test_frozen() -> None:
    spec = make_spec()
    with pytest.raises(ValueError):
        spec.n_layers = 5  # type: ignore[misc]


def test_list_layer_types_become_tuple() -> None:
    spec = make_spec(layer_types=["global"] * 4, sliding_window=None)
    assert spec.layer_types == ("global",) * 4


# -- sizes -------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "itemsize"), [("float32", 4), ("float16", 2), ("bfloat16", 2)])
def test_bytes_per_block(dtype: str, itemsize: int) -> None:
    spec = make_spec(dtype=dtype, n_kv_heads=4, head_dim=64, block_tokens=128)
    assert spec.itemsize == itemsize
    assert spec.bytes_per_block == 2 * 4 * 64 * 128 * itemsize


def test_layer_id_groups() -> None:
    spec = make_spec()
    assert spec.global_layer_ids == (3,)
    assert spec.sliding_layer_ids == (0, 1, 2)
    assert [spec.is_sliding(i) for i in range(4)] == [True, True, True, False]


@pytest.mark.parametrize("layer_id", [-1, 4])
def test_layer_id_out_of_range(layer_id: int) -> None:
    with pytest.raises(ValueError, match=rf"layer_id {layer_id} outside \[0, 4\)"):
        make_spec().is_sliding(layer_id)


@pytest.mark.parametrize(
    ("num_tokens", "global_blocks", "sliding_blocks"),
    [(0, 0, 0), (1, 1, 1), (256, 1, 1), (257, 2, 2), (512, 2, 2), (513, 3, 2), (10_000, 40, 2)],
)
def test_max_blocks_for_layer(num_tokens: int, global_blocks: int, sliding_blocks: int) -> None:
    spec = make_spec()  # window 512 = 2 blocks of 256
    assert spec.max_blocks_for_layer(3, num_tokens) == global_blocks
    assert spec.max_blocks_for_layer(0, num_tokens) == sliding_blocks
    assert spec.blocks_for_context(num_tokens) == global_blocks + 3 * sliding_blocks


def test_window_not_multiple_of_block() -> None:
    spec = make_spec(sliding_window=300)
    assert spec.tokens_kept(0, 1000) == 300
    assert spec.tokens_kept(3, 1000) == 1000
    assert spec.max_blocks_for_layer(0, 1000) == 2
    assert spec.max_blocks_for_layer(0, 299) == 2


def test_negative_tokens_rejected() -> None:
    with pytest.raises(ValueError, match="num_tokens must be >= 0, got -1"):
        make_spec().tokens_kept(0, -1)
