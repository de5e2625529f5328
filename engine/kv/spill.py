"""Agent contexts spilled to disk: one safetensors file per agent, written atomically.

The file holds, per layer, the K/V tokens the agent's blocks held, in the blocks' own
format (float: ``k.<layer>``, ``v.<layer>``, ``[H, T, D]``; quantized: ``k.<layer>.q``,
``.scales``, ``.biases``, never dequantized), its token ids, and metadata that ties it to
one cache shape and KV format. Loading checks all of it, token ids included: a truncated, foreign or mismatched
file, or one written from another context than the one the engine continues, raises
``SpillError`` and the engine falls back to re-prefilling the agent's tokens.

Files are private (0600 in a 0700 folder) and their folder keeps within a byte budget:
writing a file removes the least recently written others until it fits.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from pool import ModelCacheSpec

from .kv_format import KVTokens, Part, host_view, parts_of
from engine.private import FILE_MODE, private_dir
from engine.kv.spill_folders import spill_file_name

FORMAT = "blockpool-spill"
VERSION = 1


class SpillError(RuntimeError):
    """A spill file could not be written or read back."""


@dataclass(frozen=True)
class SpilledContext:
    """What a spill file gives back."""

    agent_id: str
    token_ids: list[int]
    layers: list[KVTokens[np.ndarray]]  # per layer, as the blocks store it
    num_bytes: int
    ms: float


@dataclass(frozen=True)
class SpillUsage:
    """What a spill folder holds (for ``blockpool doctor`` and the README)."""

    folder: Path
    num_files: int
    num_bytes: int


class SpillStore:
    """Spill files in one folder, named after their agents.

    ``budget_bytes``: the most the folder's files may hold together (None: no limit).
    """

    def __init__(self, folder: str | Path, spec: ModelCacheSpec, model_key: str = "",
                 budget_bytes: int | None = None) -> None:
        if budget_bytes is not None and budget_bytes < 0:
            raise ValueError(f"spill budget must be >= 0 bytes, got {budget_bytes}")
        self.folder = Path(folder)
        self.spec = spec
        self.model_key = model_key  # K/V only make sense for the weights that computed them
        self.budget_bytes = budget_bytes

    def path(self, agent_id: str) -> Path:
        return self.folder / spill_file_name(agent_id)

    def save(self, agent_id: str, token_ids: list[int], layers: list[KVTokens[mx.array]]) -> tuple[Path, int]:
        """Write the context atomically; returns the path and bytes written."""
        try:
            private_dir(self.folder)
        except OSError as exc:
            raise SpillError(f"cannot create spill folder {self.folder}: {exc.strerror or exc}") from exc
        arrays: dict[str, mx.array] = {"token_ids": mx.array(np.asarray(token_ids, dtype=np.int32))}
        for layer_id, layer in enumerate(layers):
            for part, keys, values in zip(parts_of(self.spec), layer.keys, layer.values):
                arrays[_name("k", layer_id, part)], arrays[_name("v", layer_id, part)] = keys, values
        metadata = {
            "format": FORMAT,
            "version": str(VERSION),
            "agent_id": agent_id,
            "total_tokens": str(len(token_ids)),
            "spec": self.spec.model_dump_json(),
            "kv_format": self.spec.kv_format,
            "model_key": self.model_key,
        }
        target = self.path(agent_id)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.safetensors")
        num_bytes = sum(a.nbytes for a in arrays.values())
        self._make_room(target, num_bytes)
        try:
            mx.save_safetensors(str(tmp), arrays, metadata=metadata)
            os.chmod(tmp, FILE_MODE)  # before it gets its name: never readable by others
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())  # a crash after the rename must not leave a hole
            os.replace(tmp, target)  # readers see the old file or the new one, never half of one
        except (OSError, RuntimeError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            raise SpillError(f"cannot write spill file {target}: {exc}") from exc
        return target, num_bytes

    def usage(self) -> SpillUsage:
        files = self._files()
        return SpillUsage(self.folder, len(files), sum(size for _, size, _ in files))

    def _files(self) -> list[tuple[Path, int, float]]:
        """(path, bytes, mtime) of the finished spill files in the folder."""
        try:
            paths = [p for p in self.folder.glob("*.safetensors") if not p.name.startswith(".")]
        except OSError:
            return []
        found = []
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((path, stat.st_size, stat.st_mtime))
        return found

    def _make_room(self, target: Path, num_bytes: int) -> None:
        """Remove the least recently written other files until ``num_bytes`` more fit the budget."""
        if self.budget_bytes is None:
            return
        if num_bytes > self.budget_bytes:
            raise SpillError(
                f"a spill file of {num_bytes} bytes does not fit the spill budget of {self.budget_bytes} "
                "bytes; raise the budget (--spill-budget) to keep contexts this long on disk"
            )
        others = sorted((f for f in self._files() if f[0] != target), key=lambda f: f[2])
        total = sum(size for _, size, _ in others)
        while others and total + num_bytes > self.budget_bytes:
            path, size, _ = others.pop(0)
            path.unlink(missing_ok=True)
            total -= size

    def load(self, agent_id: str, expected: list[int] | None = None) -> SpilledContext:
        """Read and check an agent's spill file; with ``expected``, it must hold exactly those token ids."""
        tic = time.perf_counter()
        path = self.path(agent_id)
        try:
            arrays, metadata = mx.load(str(path), return_metadata=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise SpillError(f"spill file {path} is unreadable (missing, truncated or not safetensors): {exc}") from exc
        self._check_metadata(path, metadata, agent_id)
        token_ids = np.array(arrays["token_ids"]).astype(np.int64).tolist() if "token_ids" in arrays else None
        if token_ids is None or len(token_ids) != int(metadata["total_tokens"]):
            raise SpillError(f"spill file {path} has no token ids matching its total_tokens")
        if expected is not None and token_ids != expected:
            raise SpillError(_other_context(path, token_ids, expected))
        layers = [self._layer(path, arrays, layer_id, len(token_ids)) for layer_id in range(self.spec.n_layers)]
        num_bytes = sum(layer.nbytes for layer in layers)
        return SpilledContext(agent_id, token_ids, layers, num_bytes, (time.perf_counter() - tic) * 1000)

    def discard(self, agent_id: str) -> None:
        """Remove an agent's spill file if there is one (a stale file must never be restored)."""
        path = self.path(agent_id)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise SpillError(f"cannot remove stale spill file {path}: {exc.strerror or exc}") from exc

    def _check_metadata(self, path: Path, metadata: dict[str, str], agent_id: str) -> None:
        if metadata.get("format") != FORMAT or metadata.get("version") != str(VERSION):
            raise SpillError(
                f"{path} is not a blockpool spill file of version {VERSION} "
                f"(format={metadata.get('format')!r}, version={metadata.get('version')!r})"
            )
        if metadata.get("model_key") != self.model_key:
            raise SpillError(f"{path} was written by another model (key {metadata.get('model_key')!r})")
        if metadata.get("agent_id") != agent_id:
            raise SpillError(f"{path} belongs to agent {metadata.get('agent_id')!r}, not {agent_id!r}")
        try:
            spec = ModelCacheSpec.model_validate(json.loads(metadata.get("spec", "")))
        except ValueError as exc:
            raise SpillError(f"{path} has an unreadable cache spec: {exc}") from exc
        if spec != self.spec:
            raise SpillError(f"{path} was written for another model's cache shape or KV format ({spec}), "
                             f"not {self.spec}")
        if metadata.get("kv_format", self.spec.kv_format) != self.spec.kv_format:  # files before issue 14: float
            raise SpillError(f"{path} holds {metadata.get('kv_format')} blocks, not {self.spec.kv_format}")

    def _layer(self, path: Path, arrays: dict[str, mx.array], layer_id: int, total: int) -> KVTokens[np.ndarray]:
        kept = self.spec.tokens_kept(layer_id, total)
        keys, values = [], []
        for part in parts_of(self.spec):
            pair = arrays.get(_name("k", layer_id, part)), arrays.get(_name("v", layer_id, part))
            want = (self.spec.n_kv_heads, kept, part.dim)
            if any(a is None or tuple(a.shape) != want for a in pair):
                raise SpillError(f"{path} layer {layer_id}: expected {_name('k', layer_id, part)} and "
                                 f"{_name('v', layer_id, part)} of shape {want} ({self.spec.kv_format} blocks)")
            if any(a.dtype != part.dtype for a in pair):  # type: ignore[union-attr]
                raise SpillError(f"{path} layer {layer_id}: dtype {pair[0].dtype}, expected {part.dtype}")  # type: ignore[union-attr]
            keys.append(host_view(pair[0]))  # type: ignore[arg-type]
            values.append(host_view(pair[1]))  # type: ignore[arg-type]
        return KVTokens(tuple(keys), tuple(values))


def _name(kv: str, layer_id: int, part: Part) -> str:
    """``k.3`` for float blocks (the names of files before quantized blocks), ``k.3.scales`` ..."""
    return f"{kv}.{layer_id}" + (f".{part.name}" if part.name else "")


def _other_context(path: Path, found: list[int], expected: list[int]) -> str:
    same = next((i for i, (a, b) in enumerate(zip(found, expected)) if a != b), min(len(found), len(expected)))
    return (
        f"spill file {path} holds another context ({len(found)} tokens) than the one continued "
        f"({len(expected)} tokens; they differ from token {same} on): a stale file, not used"
    )


def model_key(model: object) -> str:
    """A fingerprint of a model's weights: names, shapes, dtypes and a sample of values."""
    from mlx.utils import tree_flatten

    digest = hashlib.sha1()
    for name, value in tree_flatten(model.parameters()):  # type: ignore[attr-defined]
        digest.update(f"{name}:{value.shape}:{value.dtype};".encode())
        sample = value.reshape(-1)[:256]
        digest.update(np.array(sample.astype(mx.float32) if sample.dtype == mx.bfloat16 else sample).tobytes())
    return digest.hexdigest()[:16]
