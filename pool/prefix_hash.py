"""Chained content hashes of full blocks: one hash names a token range in every layer.

Block i's hash covers tokens [0, (i + 1) * block_tokens): it hashes block i-1's hash
and block i's own token ids, so equal hashes mean equal prefixes, not just equal
blocks. The chain starts from a seed that hashes the model key, so two models never
share a block. xxh3-128 keeps accidental collisions out of reach (2**-64 at 2**32 blocks).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import xxhash

_SEED_TAG = b"blockpool-prefix-v1\x00"


class BlockHasher:
    """Hashes the full blocks of token sequences for one model and block size."""

    def __init__(self, model_key: str, block_tokens: int) -> None:
        if block_tokens < 1:
            raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
        self.model_key = model_key
        self.block_tokens = block_tokens
        self.seed_hash: int = xxhash.xxh3_128_intdigest(_SEED_TAG + model_key.encode("utf-8"))

    def chain_seed(self, salt: str | None) -> int:
        """Where a chain starts: the model's seed, or one of its own per ``cache_salt`` (vLLM's
        name), so that callers with different salts never find each other's blocks."""
        if salt is None:
            return self.seed_hash
        return xxhash.xxh3_128_intdigest(self.seed_hash.to_bytes(16, "little") + b"salt\x00" + salt.encode("utf-8"))

    def num_full_blocks(self, num_tokens: int) -> int:
        return num_tokens // self.block_tokens

    def block_hash(self, parent_hash: int, token_ids: Sequence[int]) -> int:
        """The hash of one full block whose predecessor's hash is `parent_hash`."""
        if len(token_ids) != self.block_tokens:
            raise ValueError(
                f"a full block has {self.block_tokens} token ids, got {len(token_ids)}"
            )
        bad = [t for t in token_ids if not 0 <= t < 2**63]
        if bad:
            raise ValueError(f"token ids must lie in [0, 2**63), got {bad[0]!r}")
        payload = parent_hash.to_bytes(16, "little") + struct.pack(
            f"<{len(token_ids)}q", *token_ids
        )
        return xxhash.xxh3_128_intdigest(payload)

    def block_hashes(self, token_ids: Sequence[int], *, num_blocks: int | None = None,
                     salt: str | None = None) -> list[int]:
        """Hashes of the leading full blocks of `token_ids` (a trailing partial block has none).

        `num_blocks` stops early (at most that many hashes); `salt` starts the chain (`chain_seed`).
        """
        count = self.num_full_blocks(len(token_ids))
        if num_blocks is not None:
            count = min(count, num_blocks)
        hashes: list[int] = []
        parent, bt = self.chain_seed(salt), self.block_tokens
        for i in range(count):
            parent = self.block_hash(parent, token_ids[i * bt : (i + 1) * bt])
            hashes.append(parent)
        return hashes
