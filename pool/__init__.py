"""Block-pool bookkeeping for a paged KV cache: ids, holders, counts, token ranges, hashes.

No tensors live here; the engine turns these records into arrays.
"""

from __future__ import annotations

from pool.agent_blocks import AgentBlocks
from pool.block import Block
from pool.block_pool import BlockPool
from pool.errors import PoolExhausted, UnsupportedCacheError
from pool.prefix_hash import BlockHasher
from pool.prefix_index import PrefixMatch
from pool.sharing import RegisterStats
from pool.snapshot import BlockInfo, PoolSnapshot
from pool.spec import ModelCacheSpec
from pool.truncation import can_truncate_in_place

__all__ = [
    "AgentBlocks",
    "Block",
    "BlockHasher",
    "BlockInfo",
    "BlockPool",
    "ModelCacheSpec",
    "PoolExhausted",
    "PrefixMatch",
    "PoolSnapshot",
    "RegisterStats",
    "UnsupportedCacheError",
    "can_truncate_in_place",
]
