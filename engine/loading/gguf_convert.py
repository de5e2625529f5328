"""Convert a GGUF file once into a standard mlx-lm model directory in the cache.

The copy is built in a temp dir next to its final place and renamed in at the
end, so a half-written copy is never loaded. A `blockpool.json` marker records
the source's size and mtime, the format version and the dtype; a copy whose
marker is missing or different is stale and gets rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
from mlx_lm.utils import make_shards, save_config

from .gguf_gemma import check_gemma, gemma_config, gemma_weights
from .gguf_header import GGUFHeader, UnsupportedGGUF, read_header
from .gguf_llama import SUPPORTED_TENSOR_TYPES, check_llama, llama_config, llama_weights
from .gguf_tokenizer import stop_token_ids, write_tokenizer_files
from .paths import converted_models_dir

FORMAT_VERSION = 1  # bump when the converted layout changes, to rebuild old copies
DTYPES = ("float32", "bfloat16", "float16", "quantized")
MARKER_FILE = "blockpool.json"
SUPPORTED_ARCHITECTURES = (
    f"llama (tensor types {'/'.join(SUPPORTED_TENSOR_TYPES)})",
    "gemma3 (any type the `gguf` package dequantizes)",
)

Progress = Callable[[str, float], None]


def print_progress(message: str, fraction: float) -> None:
    """Default progress: one short line per conversion stage on stderr."""
    print(f"[blockpool] {fraction:4.0%} {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ConversionMarker:
    """What a converted copy was made from; it is reused only while all of this matches."""

    format_version: int
    source_path: str
    source_size_bytes: int
    source_mtime_ns: int
    dtype: str

    @classmethod
    def for_source(cls, source: Path, dtype: str) -> ConversionMarker:
        stat = source.stat()
        return cls(FORMAT_VERSION, str(source.resolve()), stat.st_size, stat.st_mtime_ns, dtype)

    @classmethod
    def read(cls, model_dir: Path) -> ConversionMarker | None:
        try:
            return cls(**json.loads((model_dir / MARKER_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, model_dir: Path) -> None:
        (model_dir / MARKER_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def converted_dir(source: Path, dtype: str) -> Path:
    """Cache folder for (source, dtype): readable stem plus a hash of the absolute path."""
    digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.stem)
    return converted_models_dir() / f"{stem}-{digest}-{dtype}"


def is_fresh(model_dir: Path, source: Path, dtype: str) -> bool:
    return ConversionMarker.read(model_dir) == ConversionMarker.for_source(source, dtype)


def ensure_converted(source: Path, dtype: str, progress: Progress = print_progress) -> Path:
    """The mlx-lm directory for `source` in `dtype`, converting only if missing or stale."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    target = converted_dir(source, dtype)
    if is_fresh(target, source, dtype):
        return target
    progress(f"converting {source.name} to an mlx-lm model ({dtype})", 0.0)
    header = read_header(source)
    marker = ConversionMarker.for_source(source, dtype)
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    workdir.chmod(0o755)  # mkdtemp makes it private; the published copy should not be
    try:
        _write_model_dir(header, dtype, workdir, progress)
        marker.write(workdir)  # last: a copy without its marker is never trusted
        _publish(workdir, target, source, dtype)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    progress(f"converted into {target}", 1.0)
    return target


def _write_model_dir(header: GGUFHeader, dtype: str, out_dir: Path, progress: Progress) -> None:
    check_supported(header)
    # The tokenizer before the weights: it is cheap and fails fast on an unsupported vocabulary.
    progress("building the tokenizer", 0.05)
    write_tokenizer_files(header, out_dir)
    _write_generation_config(header, out_dir)
    weights, config = _convert(header, dtype, progress)
    progress("writing safetensors", 0.8)
    _save_weights(weights, out_dir)
    save_config(config, out_dir / "config.json")


def check_supported(header: GGUFHeader) -> None:
    """Raise UnsupportedGGUF naming the architecture or tensor type we cannot convert."""
    if header.architecture == "llama":
        check_llama(header)
    elif header.architecture == "gemma3":
        check_gemma(header)
    else:
        raise UnsupportedGGUF(
            f"{header.path}: architecture {header.architecture!r} is not supported; "
            f"supported: {'; '.join(SUPPORTED_ARCHITECTURES)}"
        )


def _convert(header: GGUFHeader, dtype: str, progress: Progress) -> tuple[dict[str, mx.array], dict[str, Any]]:
    if header.architecture == "llama":
        progress("loading GGUF tensors", 0.1)
        weights, quantization = llama_weights(header, mx.load(str(header.path)), dtype)
        config = llama_config(header)
    else:
        weights, quantization = gemma_weights(header, dtype, progress)
        config = gemma_config(header)
    if quantization is not None:
        config["quantization"] = quantization
    # mlx-lm reads these ids (and generation_config.json's) for its stop tokens.
    config["bos_token_id"] = header.metadata.get("tokenizer.ggml.bos_token_id")
    config["eos_token_id"] = header.metadata.get("tokenizer.ggml.eos_token_id")
    return weights, {k: v for k, v in config.items() if v is not None}


def _save_weights(weights: dict[str, mx.array], out_dir: Path) -> None:
    shards = make_shards(weights)
    if len(shards) == 1:
        mx.save_safetensors(str(out_dir / "model.safetensors"), shards[0], metadata={"format": "mlx"})
        return
    weight_map = {}
    for index, shard in enumerate(shards, start=1):
        name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        mx.save_safetensors(str(out_dir / name), shard, metadata={"format": "mlx"})
        weight_map.update({key: name for key in shard})
    index_file = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index_file, indent=2), encoding="utf-8")


def _write_generation_config(header: GGUFHeader, out_dir: Path) -> None:
    # mlx-lm reads eos_token_id from here to decide where generation stops.
    stop_ids = stop_token_ids(header)
    generation = {
        "bos_token_id": header.metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": stop_ids[0] if len(stop_ids) == 1 else (stop_ids or None),
        "pad_token_id": header.metadata.get("tokenizer.ggml.padding_token_id"),
    }
    payload = {k: v for k, v in generation.items() if v is not None}
    (out_dir / "generation_config.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _publish(workdir: Path, target: Path, source: Path, dtype: str) -> None:
    """Rename the finished copy into place, moving a stale copy aside first."""
    if target.exists():
        stale = target.with_name(f".stale-{target.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(target, stale)
        except FileNotFoundError:
            pass  # another process moved it already
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(workdir, target)
    except OSError:
        # Another process published first; its copy is as good as ours if fresh.
        if not is_fresh(target, source, dtype):
            raise
