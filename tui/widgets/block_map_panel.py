"""The block map with its utilisation line and legend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from tui.units import readable_bytes
from tui.widgets.block_map import CACHED, CACHED_STYLE, FREE, FREE_STYLE, SHARED, SHARED_STYLE, USED, BlockMap

if TYPE_CHECKING:
    from pool import PoolSnapshot

MIB = 2**20
TITLE = "KV block pool"


class BlockMapPanel(Vertical):
    """Utilisation (used/total blocks and MiB), the map, and a legend of agent colours.

    The border title names the block format and size once a pool is known: the header's
    engine line is cut short in narrow terminals, and a server's is its connection.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = TITLE

    def compose(self) -> ComposeResult:
        yield Static("waiting for the engine…", classes="summary")
        yield BlockMap(id="block-map-grid")
        yield Static("", classes="legend")

    def show(self, snapshot: PoolSnapshot | None, names: Mapping[str, str], colours: Mapping[str, str]) -> None:
        """``names`` and ``colours`` are keyed by agent id, in agent order."""
        grid = self.query_one(BlockMap)
        grid.show(snapshot, colours)
        if snapshot is None:
            return
        self._set_title(_title(snapshot))
        _update(self.query_one(".summary", Static), _summary(snapshot, grid.blocks_per_cell))
        _update(self.query_one(".legend", Static), _legend(snapshot, names, colours))
        tooltip = _shared_tooltip(snapshot, names)
        if grid.tooltip != tooltip:
            grid.tooltip = tooltip

    def show_note(self, text: Text) -> None:
        """No map to draw (a server that exposes none): ``text`` says so, and what is known instead."""
        self.query_one(BlockMap).show(None, {})
        self._set_title(TITLE)
        _update(self.query_one(".summary", Static), text)
        _update(self.query_one(".legend", Static), Text())

    def _set_title(self, title: str) -> None:
        if self.border_title != title:
            self.border_title = title


def _update(static: Static, text: Text) -> None:
    """Skip unchanged text; lay out again only when the number of lines changes."""
    old = static.content
    if isinstance(old, Text) and old == text:
        return
    static.update(text, layout=not isinstance(old, Text) or old.plain.count("\n") != text.plain.count("\n"))


def _title(snapshot: PoolSnapshot) -> str:
    """``KV blocks · q8/g64 · 108 KiB each`` (fits the 44-column panel with ``bfloat16``), else the plain title.

    A server older than quantized blocks names no format: then only the size is shown.
    """
    if not snapshot.bytes_per_block:  # a server's pool before its first snapshot
        return TITLE
    parts = ["KV blocks", snapshot.kv_format, f"{readable_bytes(snapshot.bytes_per_block)} each"]
    return " · ".join(part for part in parts if part)


def _summary(snapshot: PoolSnapshot, blocks_per_cell: int) -> Text:
    used, total = snapshot.used_blocks(), snapshot.total_blocks
    pct = 100 * used / total if total else 0.0
    text = Text()
    text.append(f"{used:,}/{total:,} blocks ", style="bold")
    text.append(f"({pct:.0f}%) · {snapshot.used_bytes() / MIB:.1f}/{total * snapshot.bytes_per_block / MIB:.1f} MiB")
    text.append(f"\n{snapshot.n_layers} layers × {snapshot.block_tokens} tok", style="dim")
    if blocks_per_cell > 1:
        text.append(f" · 1 cell ≈ {blocks_per_cell} blocks", style="dim")
    return text


def _legend(snapshot: PoolSnapshot, names: Mapping[str, str], colours: Mapping[str, str]) -> Text:
    usage = snapshot.own_usage()  # shared blocks once, below: the legend adds up to the pool
    text = Text()
    for agent_id, colour in colours.items():
        text.append(USED, style=colour)
        text.append(f" {names.get(agent_id, agent_id)} {usage.get(agent_id, 0)}  ")
    for agent_id in sorted(set(usage) - set(colours)):  # closed agents whose blocks are not freed yet
        text.append(f"{USED} {agent_id} {usage[agent_id]}  ", style="white")
    if num_shared := snapshot.num_shared_blocks():
        text.append(f"\n{SHARED} shared {num_shared:,} ({_holders(snapshot)})  ", style=SHARED_STYLE)
    elif snapshot.cached_blocks:
        text.append("\n")
    if num_cached := snapshot.num_cached_blocks():
        text.append(CACHED, style=CACHED_STYLE)
        text.append(f" cached {num_cached:,}  ", style="dim")
    text.append(FREE, style=FREE_STYLE)
    text.append(f" free {snapshot.free_blocks() - num_cached:,}", style="dim")
    if "sliding" in snapshot.layer_types:
        text.append("\nG global layer · s sliding-window layer", style="dim")
    return text


def _holders(snapshot: PoolSnapshot) -> str:
    """How many agents hold the shared blocks: "2 holders", or "2–3 holders"."""
    counts = sorted({info.ref_count for info in snapshot.blocks if info.is_shared})
    span = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{span} holders"


def _shared_tooltip(snapshot: PoolSnapshot, names: Mapping[str, str]) -> str | None:
    """Which agents share which blocks (one line per group of holders), or None when none are shared."""
    groups = Counter(info.holder_ids for info in snapshot.blocks if info.is_shared)
    lines = [f"{SHARED} {count:,} blocks held by {len(holders)}: "
             + ", ".join(names.get(h, h) for h in holders or ()) for holders, count in groups.most_common()]
    if snapshot.cached_blocks:
        lines.append(f"{CACHED} {snapshot.num_cached_blocks():,} cached free blocks: no holder, "
                     "kept for the next prompt that starts the same way")
    return "\n".join(lines) or None
