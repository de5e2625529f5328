"""The block map: one row per layer, one cell per block slot, coloured by owner.

Drawn with the line API (``ScrollView.render_line``): rows are built once per pool
snapshot and width, then cached, so scrolling and redraws cost nothing per cell.
A row holds the layer's used blocks grouped by agent (in token order; a block several
agents hold is drawn once, as ``SHARED`` in its own style, after the agents' own), then
the layer's cached free blocks (``CACHED``: no holder, kept for prefix hits), then a dim
free remainder up to the layer's share of the pool. When a row is wider than the
widget, each cell stands for several blocks (``blocks_per_cell``) and cells are
apportioned in proportion (``apportion``): the map never draws more use than there is.
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
SHARED_STYLE = Style(color="bright_white", bold=True)  # no agent's colour: the legend counts it once
# Row keys besides agent ids (which are never empty strings: these cannot collide).
SHARED_KEY, CACHED_KEY, FREE_KEY = "", "\0cached", "\0free"
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
        counts: dict[str, int] = dict(Counter(owner for owner, shared in row.cell_keys if not shared))
        counts[SHARED_KEY] = sum(shared for _, shared in row.cell_keys)
        counts[CACHED_KEY] = row.num_cached
        counts[FREE_KEY] = self._slots - len(row.owners) - row.num_cached
        cells = apportion(counts, width)
        for key, count in cells.items():
            if key == SHARED_KEY:
                segments.append(Segment(SHARED * count, SHARED_STYLE))
            elif key == CACHED_KEY:
                segments.append(Segment(CACHED * count, CACHED_STYLE))
            elif key == FREE_KEY:
                segments.append(Segment(FREE * count, FREE_STYLE))
            else:
                segments.append(Segment(USED * count, Style(color=self._colours.get(key, "white"))))
        return Strip(segments)


def apportion(counts: Mapping[K, int], cells: int) -> dict[K, int]:
    """Cells per key, in order, proportional to ``counts`` (largest remainder, Hamilton's
    method): they add up to ``cells`` and each is within one cell of its exact share. A key
    with a few blocks may get no cell; the legend still counts it."""
    total = sum(counts.values())
    if total <= 0:
        return {key: 0 for key in counts}
    exact = {key: n * cells / total for key, n in counts.items()}
    out = {key: int(share) for key, share in exact.items()}
    order = sorted(exact, key=lambda key: out[key] - exact[key])  # largest remainder first; stable
    for key in order[: cells - sum(out.values())]:
        out[key] += 1
    return out
