"""Which block holds a hashed token range in each layer, and the longest prefix hit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pool.spec import ModelCacheSpec


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """Blocks that let a new context skip prefilling its first `num_tokens` tokens.

    Global layers hold all `num_blocks` leading blocks; sliding layers hold only
    the blocks their window needs before the cut. `num_global_blocks` is how far
    the global layers alone would reach, so the engine can tell how much the
    sliding layers shortened the hit.
    """

    token_ids: tuple[int, ...]  # the matched tokens, num_blocks * block_tokens of them
    block_hashes: tuple[int, ...]  # chained hashes of the matched blocks
    layer_block_ids: tuple[tuple[int, ...], ...]  # per layer, the blocks to hold, in token order
    num_query_blocks: int  # full blocks in the query
    num_global_blocks: int
    num_cached_blocks: int  # of the blocks to hold, how many are free (cached) right now

    @property
    def num_blocks(self) -> int:
        """Leading full blocks matched (the same in every layer's token range)."""
        return len(self.block_hashes)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_held_blocks(self) -> int:
        """Blocks over all layers an agent holds after taking the hit."""
        return sum(len(ids) for ids in self.layer_block_ids)


class PrefixIndex:
    """(layer, hash) -> block id for every hashed block, held or cached."""

    def __init__(self, spec: ModelCacheSpec) -> None:
        self.spec = spec
        self._block_ids: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._block_ids)

    def find(self, layer_id: int, block_hash: int) -> int | None:
        return self._block_ids.get((layer_id, block_hash))

    def add(self, layer_id: int, block_hash: int, block_id: int) -> None:
        key = (layer_id, block_hash)
        assert key not in self._block_ids, f"hash of layer {layer_id} indexed twice"
        self._block_ids[key] = block_id

    def remove(self, layer_id: int, block_hash: int, block_id: int) -> None:
        removed = self._block_ids.pop((layer_id, block_hash))
        assert removed == block_id, f"index named block {removed}, not {block_id}"

    def entries(self) -> dict[tuple[int, int], int]:
        return dict(self._block_ids)

    def window_block_range(self, layer_id: int, num_blocks: int) -> range:
        """Block indices a layer needs to continue after `num_blocks` full blocks."""
        cut = num_blocks * self.spec.block_tokens
        first_token = cut - self.spec.tokens_kept(layer_id, cut)
        return range(first_token // self.spec.block_tokens, num_blocks)

    def longest_cut(self, block_hashes: Sequence[int]) -> tuple[int, int]:
        """(blocks every layer can serve, blocks every global layer holds) for a query."""
        spec = self.spec
        num_global = len(block_hashes)
        for layer_id in spec.global_layer_ids:
            run = 0
            while run < num_global and self.find(layer_id, block_hashes[run]) is not None:
                run += 1
            num_global = run
        for cut in range(num_global, 0, -1):
            if all(self._serves(layer_id, block_hashes, cut) for layer_id in spec.sliding_layer_ids):
                return cut, num_global
        return 0, num_global

    def _serves(self, layer_id: int, block_hashes: Sequence[int], cut: int) -> bool:
        return all(
            self.find(layer_id, block_hashes[i]) is not None
            for i in self.window_block_range(layer_id, cut)
        )

    def layer_block_ids(self, block_hashes: Sequence[int], cut: int) -> tuple[tuple[int, ...], ...]:
        """Per layer, the ids of the blocks a hit of `cut` blocks holds."""
        layers = []
        for layer_id in range(self.spec.n_layers):
            ids = [self.find(layer_id, block_hashes[i]) for i in self.window_block_range(layer_id, cut)]
            assert None not in ids, f"layer {layer_id} misses a block of a {cut}-block hit"
            layers.append(tuple(ids))  # type: ignore[arg-type]
        return tuple(layers)
