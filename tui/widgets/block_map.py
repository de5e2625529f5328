"""The block map: one row per layer, one cell per block slot, coloured by owner.

Drawn with the line API (``ScrollView.render_line``): rows are built once per pool
snapshot and width, then cached, so scrolling and redraws cost nothing per cell.
A row holds the layer's used blocks grouped by agent (in token order; a block several
agents hold is drawn once, in its first holder's colour, as ``SHARED``), then the
layer's cached free blocks (``CACHED``: no holder, kept for prefix hits), then a dim
free remainder up to the layer's share of the pool. When a row is wider than the
widget, each cell stands for several blocks (``blocks_per_cell``), and every agent
holding blocks in the layer keeps at least one cell.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

if TYPE_CHECKING:
    from pool import PoolSnapshot

LABEL_WIDTH = 6  # "12 G " plus a space
FREE_STYLE = Style(color="grey35")
CACHED_STYLE = Style(color="grey62")
GLOBAL_LABEL = Style(color="grey70", bold=True)
SLIDING_LABEL = Style(color="#39c5cf", italic=True)
USED, SHARED, CACHED, FREE = "█", "▓", "░", "·"
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class LayerRow:
    """Owners of a layer's used blocks, in display order; ``shared[i]``: block i has several holders."""

    layer_id: int
    sliding: bool
    owners: tuple[str, ...]
    shared: tuple[bool, ...] = ()
    num_cached: int = 0  # free blocks of the layer that keep their hash

    @property
    def cell_keys(self) -> tuple[tuple[str, bool], ...]:
        """(owner, shared) of each used block: an owner's shared and own blocks get their own cells."""
        shared = self.shared or (False,) * len(self.owners)
        return tuple(zip(self.owners, shared))


def layer_rows(snapshot: PoolSnapshot, agent_order: Sequence[str]) -> tuple[LayerRow, ...]:
    """One row per layer; blocks grouped by agent (in ``agent_order``), then by position."""
    rank = {agent_id: i for i, agent_id in enumerate(agent_order)}
    cached = Counter(info.layer_id for info in snapshot.cached_blocks)
    rows = []
    for layer_id, infos in snapshot.by_layer().items():
        infos = sorted(infos, key=lambda b: (rank.get(b.agent_id, len(rank)), b.agent_id or "", b.token_start or 0))
        sliding = snapshot.layer_types[layer_id] == "sliding"
        rows.append(LayerRow(layer_id, sliding, tuple(b.agent_id or "" for b in infos),
                             tuple(b.is_shared for b in infos), cached[layer_id]))
    return tuple(rows)


def row_slots(snapshot: PoolSnapshot, rows: Sequence[LayerRow]) -> int:
    """Slots per row: a layer's even share of the pool, or more if a layer holds more."""
    share = -(-snapshot.total_blocks // max(snapshot.n_layers, 1))
    return max([share, *(len(row.owners) + row.num_cached for row in rows)])


class BlockMap(ScrollView, can_focus=True):
    """See the module docstring; data comes down through ``show``."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: tuple[LayerRow, ...] = ()
        self._slots = 0
        self._colours: dict[str, str] = {}
        self._strips: dict[int, Strip] = {}
        self._strip_width = 0
        self.blocks_per_cell = 1

    def show(self, snapshot: PoolSnapshot | None, colours: Mapping[str, str]) -> None:
        """Take a new pool snapshot; ``colours`` (in agent order) maps owners to colours."""
        rows = layer_rows(snapshot, list(colours)) if snapshot is not None else ()
        slots = row_slots(snapshot, rows) if snapshot is not None else 0
        if rows == self._rows and slots == self._slots and dict(colours) == self._colours:
            return
        self._rows, self._slots, self._colours = rows, slots, dict(colours)
        self._relayout()

    def on_resize(self) -> None:
        self._relayout()

    def _size_updated(self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True) -> bool:
        # The compositor reports a ScrollView's virtual size as its viewport; ours (set in _relayout) is taller.
        # Compared as given, the two differ on every layout of the screen and the scrollbar is redrawn each time
        # (several times a second while replies stream, ~7 ms each): compare ours instead.
        return super()._size_updated(size, self.virtual_size, container_size, layout)

    def _relayout(self) -> None:
        self._strips.clear()
        cells_width = max(self.scrollable_content_region.width - LABEL_WIDTH, 1)
        self.blocks_per_cell = max(1, -(-self._slots // cells_width))
        virtual_size = Size(self.scrollable_content_region.width, len(self._rows))
        if virtual_size != self.virtual_size:
            self.virtual_size = virtual_size
        self.refresh(self.size.region)  # the cells only: redrawing the scrollbar too cost more than the map

    def render_line(self, y: int) -> Strip:
        _, scroll_y = self.scroll_offset
        index = y + scroll_y
        width = self.scrollable_content_region.width
        if width != self._strip_width:
            self._strips.clear()
            self._strip_width = width
        if index >= len(self._rows):
            return Strip.blank(width, self.rich_style)
        if index not in self._strips:
            self._strips[index] = self._render_row(self._rows[index]).crop_extend(0, width, self.rich_style)
        return self._strips[index]

    def _render_row(self, row: LayerRow) -> Strip:
        label = f"{row.layer_id:>2} {'s' if row.sliding else 'G'}".ljust(LABEL_WIDTH)
        segments = [Segment(label, SLIDING_LABEL if row.sliding else GLOBAL_LABEL)]
        width = -(-self._slots // self.blocks_per_cell)
        cells = owner_cells(row.cell_keys, self.blocks_per_cell, width)
        for (owner, shared), count in cells.items():
            glyph = SHARED if shared else USED
            segments.append(Segment(glyph * count, Style(color=self._colours.get(owner, "white"))))
        num_used = sum(cells.values())
        num_cached = min(-(-row.num_cached // self.blocks_per_cell), width - num_used)
        segments.append(Segment(CACHED * num_cached, CACHED_STYLE))
        segments.append(Segment(FREE * (width - num_used - num_cached), FREE_STYLE))
        return Strip(segments)


def owner_cells(owners: Sequence[K], blocks_per_cell: int, width: int) -> dict[K, int]:
    """Cells per owner, in row order: blocks / blocks_per_cell, rounded, but at least one,
    so that an agent holding a single block still shows when the row is summarised."""
    counts: dict[K, int] = {}
    for owner in owners:
        counts[owner] = counts.get(owner, 0) + 1
    cells = {owner: max(1, round(n / blocks_per_cell)) for owner, n in counts.items()}
    while sum(cells.values()) > width:  # rounding small owners up can overflow the row
        cells[max(cells, key=cells.__getitem__)] -= 1
    return cells
