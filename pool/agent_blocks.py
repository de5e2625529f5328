"""The blocks one conversation holds, per layer, in token order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pool.block import Block
from pool.spec import ModelCacheSpec


@dataclass(eq=False)
class AgentBlocks:
    """One agent's context: its token ids and, per layer, its blocks.

    Only bookkeeping: blocks are allocated and freed by the BlockPool; this
    object keeps their order and checks that token ranges stay contiguous.
    """

    agent_id: str
    total_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    blocks: dict[int, list[Block]] = field(default_factory=dict)
    cache_salt: str | None = None  # its blocks' hashes start from this salt (``BlockHasher.chain_seed``)

    def __post_init__(self) -> None:
        if not self.agent_id:
            raise ValueError(f"agent_id must be a non-empty string, got {self.agent_id!r}")
        if self.total_tokens < 0:
            raise ValueError(f"total_tokens must be >= 0, got {self.total_tokens}")

    def add_block(self, block: Block) -> None:
        """Append `block` to its layer, giving it the next token slot if unset."""
        if self.agent_id not in block.holder_ids:
            holders = ", ".join(repr(h) for h in block.holder_ids) or "no one"
            raise ValueError(f"block {block.block_id} belongs to {holders}, not {self.agent_id!r}")
        if block.layer_id is None:
            raise ValueError(f"block {block.block_id} has no layer (is it free?)")
        layer = self.blocks.setdefault(block.layer_id, [])
        if not layer:
            # A layer's first block may start anywhere (a re-packed sliding window).
            if block.token_start is None:
                block.token_start = 0
        else:
            last = layer[-1]
            assert last.token_start is not None  # set when it was added
            expected = last.token_start + last.capacity
            if block.token_start is None:
                block.token_start = expected
            elif block.token_start != expected:
                raise ValueError(
                    f"block {block.block_id} starts at token {block.token_start}, "
                    f"layer {block.layer_id} continues at token {expected}"
                )
        layer.append(block)

    def layer_blocks(self, layer_id: int) -> list[Block]:
        return list(self.blocks.get(layer_id, ()))

    def num_blocks(self) -> int:
        return sum(len(layer) for layer in self.blocks.values())

    def num_layer_blocks(self, layer_id: int) -> int:
        return len(self.blocks.get(layer_id, ()))

    def all_blocks(self) -> list[Block]:
        return [block for layer_id in sorted(self.blocks) for block in self.blocks[layer_id]]

    def layer_tokens(self, layer_id: int) -> int:
        """Filled tokens in a layer's blocks."""
        return sum(block.num_tokens for block in self.blocks.get(layer_id, ()))

    def remove_blocks(self, layer_id: int, blocks: Iterable[Block]) -> None:
        """Detach blocks from a layer; the caller frees them in the pool."""
        layer = self.blocks.get(layer_id, [])
        remove_ids = {id(block) for block in blocks}
        missing = remove_ids - {id(block) for block in layer}
        if missing:
            raise ValueError(
                f"{len(missing)} of the blocks are not held by {self.agent_id!r} "
                f"in layer {layer_id}"
            )
        kept = [block for block in layer if id(block) not in remove_ids]
        if kept:
            self.blocks[layer_id] = kept
        else:
            self.blocks.pop(layer_id, None)

    def replace_block(self, old: Block, new: Block) -> None:
        """Put `new` where `old` sits in its layer (copy-on-write, de-duplication)."""
        if self.agent_id not in new.holder_ids:
            raise ValueError(f"block {new.block_id} is not held by {self.agent_id!r}")
        layer = self.blocks.get(old.layer_id, []) if old.layer_id is not None else []
        positions = [i for i, block in enumerate(layer) if block is old]
        if not positions:
            raise ValueError(f"block {old.block_id} is not held by {self.agent_id!r}")
        if (new.layer_id, new.token_start) != (old.layer_id, old.token_start):
            raise ValueError(
                f"block {new.block_id} (layer {new.layer_id}, token {new.token_start}) cannot "
                f"replace block {old.block_id} (layer {old.layer_id}, token {old.token_start})"
            )
        layer[positions[0]] = new

    def clear(self) -> list[Block]:
        """Detach and return every block (the caller frees them in the pool)."""
        detached = self.all_blocks()
        self.blocks = {}
        return detached

    def check(self, spec: ModelCacheSpec) -> None:
        """Raise AssertionError if the layers' token ranges are inconsistent."""
        for layer_id, layer in self.blocks.items():
            for block in layer:
                _require(
                    block.layer_id == layer_id and self.agent_id in block.holder_ids,
                    f"block {block.block_id} ({block.holder_ids!r}, layer {block.layer_id}) "
                    f"filed under ({self.agent_id!r}, layer {layer_id})",
                )
                _require(
                    0 <= block.num_tokens <= block.capacity,
                    f"block {block.block_id} holds {block.num_tokens} tokens, "
                    f"capacity {block.capacity}",
                )
            _check_contiguous(layer_id, layer)
            self._check_layer_size(spec, layer_id, layer)

    def _check_layer_size(self, spec: ModelCacheSpec, layer_id: int, layer: list[Block]) -> None:
        if spec.is_sliding(layer_id):
            assert spec.sliding_window is not None
            limit = spec.max_blocks_for_layer(layer_id, spec.sliding_window)
            _require(
                len(layer) <= limit,
                f"sliding layer {layer_id} holds {len(layer)} blocks, at most {limit}",
            )
        elif layer:
            covered = self.layer_tokens(layer_id)
            _require(
                layer[0].token_start == 0 and covered == self.total_tokens,
                f"global layer {layer_id} covers tokens {layer[0].token_start}.."
                f"{layer[0].token_start + covered}, context has {self.total_tokens}",
            )


def _check_contiguous(layer_id: int, layer: list[Block]) -> None:
    for prev, block in zip(layer, layer[1:]):
        _require(
            prev.is_full,
            f"layer {layer_id}: block {prev.block_id} is partly filled "
            f"({prev.num_tokens}/{prev.capacity}) but is not the last",
        )
        _require(
            block.token_start == prev.token_end,
            f"layer {layer_id}: block {block.block_id} starts at {block.token_start}, "
            f"previous block ends at {prev.token_end}",
        )


def _require(condition: bool, message: str) -> None:
    # A real raise, not `assert`, so the check also runs under python -O.
    if not condition:
        raise AssertionError(message)
