"""Read a GGUF file's metadata and tensor table (not the tensor data).

A small pure-Python reader so that we can name the architecture and tensor
types of any file, check it is complete, and fail with a clear message before
handing it to `mx.load` (whose errors say only "gguf_init failed").
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# ggml tensor type id -> (name, elements per block, bytes per block); see ggml.h.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1),
    25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# GGUF metadata value type id -> struct format (8 = string, 9 = array).
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i",
                   6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY_DTYPES = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32,
                 5: np.int32, 6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64,
                 12: np.float64}
_STRING, _ARRAY = 8, 9


class GGUFFormatError(ValueError):
    """The file is not a readable GGUF (wrong magic, truncated, corrupt)."""


class UnsupportedGGUF(ValueError):
    """A valid GGUF holding an architecture, tensor type or tokenizer we cannot convert."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: the fastest-varying dimension first
    type_name: str
    offset: int  # from the start of the data section
    num_bytes: int | None  # None for a type this reader does not know


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]  # scalars as Python values, numeric arrays as numpy
    tensors: list[TensorInfo] = field(repr=False)

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    def arch_value(self, key: str, default: Any = None) -> Any:
        """An architecture-scoped key: `arch_value("block_count")` -> `llama.block_count`."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def tensor_type_counts(self) -> Counter[str]:
        return Counter(t.type_name for t in self.tensors)


class _Cursor:
    """Bounds-checked little-endian reads over a memory map."""

    def __init__(self, buffer: mmap.mmap, path: Path) -> None:
        self.buffer, self.path, self.pos = buffer, path, 0

    def take(self, num_bytes: int, what: str) -> bytes:
        end = self.pos + num_bytes
        if num_bytes < 0 or end > len(self.buffer):
            raise GGUFFormatError(
                f"{self.path}: {what} extends past the end of the file "
                f"({len(self.buffer)} bytes); the file is truncated or corrupt"
            )
        # A bytes copy, not a memoryview: a live view would stop the map from closing.
        chunk = self.buffer[self.pos:end]
        self.pos = end
        return chunk

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        raw = self.take(self.scalar("<Q", what), what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFFormatError(f"{self.path}: {what} is not valid UTF-8") from exc

    def value(self, type_id: int, what: str) -> Any:
        if type_id == _STRING:
            return self.string(what)
        if type_id == _ARRAY:
            return self.array(what)
        if type_id not in _SCALAR_FORMATS:
            raise GGUFFormatError(f"{self.path}: {what} has unknown value type {type_id}")
        return self.scalar(_SCALAR_FORMATS[type_id], what)

    def array(self, what: str) -> Any:
        item_type, count = self.scalar("<I", what), self.scalar("<Q", what)
        if item_type in _NUMPY_DTYPES:
            dtype = np.dtype(_NUMPY_DTYPES[item_type])
            raw = self.take(count * dtype.itemsize, what)
            return np.frombuffer(raw, dtype=dtype)
        return [self.value(item_type, what) for _ in range(count)]


def mlx_module_name(gguf_name: str, block_names: dict[str, str], top_names: dict[str, str]) -> str | None:
    """``blk.N.<block name>.<suffix>`` or ``<top name>.<suffix>`` -> the mlx-lm module path the
    architecture's tables give it; None for a tensor they do not name."""
    stem, _, suffix = gguf_name.rpartition(".")
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in block_names:
        return f"model.layers.{parts[1]}.{block_names[parts[2]]}.{suffix}"
    if len(parts) == 1 and parts[0] in top_names:
        return f"{top_names[parts[0]]}.{suffix}"
    return None


def read_header(path: str | Path) -> GGUFHeader:
    """Parse `path`'s header; raise GGUFFormatError if it is not a complete GGUF."""
    path = Path(path)
    if not path.is_file():
        raise GGUFFormatError(f"{path}: no such file")
    with path.open("rb") as handle:
        if path.stat().st_size < 24:
            raise GGUFFormatError(f"{path}: only {path.stat().st_size} bytes; not a GGUF file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return _parse(_Cursor(buffer, path))


def _parse(cursor: _Cursor) -> GGUFHeader:
    path = cursor.path
    magic = bytes(cursor.take(4, "magic"))
    if magic != GGUF_MAGIC:
        raise GGUFFormatError(f"{path}: starts with {magic!r}, not {GGUF_MAGIC!r}; not a GGUF file")
    version = cursor.scalar("<I", "version")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFFormatError(f"{path}: GGUF version {version}; supported: {SUPPORTED_VERSIONS}")
    num_tensors = cursor.scalar("<Q", "tensor count")
    num_keys = cursor.scalar("<Q", "metadata count")
    metadata: dict[str, Any] = {}
    for _ in range(num_keys):
        key = cursor.string("metadata key")
        metadata[key] = cursor.value(cursor.scalar("<I", key), f"metadata {key!r}")
    tensors = [_tensor_info(cursor) for _ in range(num_tensors)]
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = -(-cursor.pos // alignment) * alignment
    _check_complete(path, tensors, data_start, len(cursor.buffer))
    return GGUFHeader(path=path, version=version, metadata=metadata, tensors=tensors)


def _tensor_info(cursor: _Cursor) -> TensorInfo:
    name = cursor.string("tensor name")
    num_dims = cursor.scalar("<I", f"tensor {name!r}")
    shape = tuple(cursor.scalar("<Q", f"tensor {name!r}") for _ in range(num_dims))
    type_id = cursor.scalar("<I", f"tensor {name!r}")
    offset = cursor.scalar("<Q", f"tensor {name!r}")
    type_name, block_size, block_bytes = GGML_TYPES.get(type_id, (f"type {type_id}", 0, 0))
    num_bytes = None
    if block_size:
        num_bytes = int(np.prod(shape, dtype=np.int64)) // block_size * block_bytes
    return TensorInfo(name=name, shape=shape, type_name=type_name, offset=offset, num_bytes=num_bytes)


def _check_complete(path: Path, tensors: list[TensorInfo], data_start: int, file_bytes: int) -> None:
    for tensor in tensors:
        end = data_start + tensor.offset + (tensor.num_bytes or 0)
        if end > file_bytes:
            raise GGUFFormatError(
                f"{path}: tensor {tensor.name!r} ends at byte {end} but the file has "
                f"{file_bytes} bytes; the file is truncated (incomplete download?)"
            )
