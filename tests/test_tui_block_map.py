"""The block map's rows: owners grouped per layer, and summarised when wider than the widget."""

from __future__ import annotations

import re

import dataclasses

import pytest
from textual.app import App, ComposeResult

from textual.widgets import Static

from pool import BlockInfo, BlockPool, ModelCacheSpec, PoolSnapshot
from tests.pool_builders import PROMPT, global_spec, write_context
from tui.widgets import BlockMap, BlockMapPanel
from tui.widgets.block_map import CACHED, FREE, LABEL_WIDTH, SHARED, USED, apportion, layer_rows, row_slots

pytestmark = pytest.mark.anyio
RED, GREEN = "#ff0000", "#00ff00"


def snapshot(total_blocks: int, owners_per_layer: list[list[str]], sliding: set[int] = frozenset()) -> PoolSnapshot:
    blocks, next_id = [], 0
    for layer_id, owners in enumerate(owners_per_layer):
        for position, agent_id in enumerate(owners):
            blocks.append(BlockInfo(next_id, layer_id, agent_id, position * 16, 16))
            next_id += 1
    layer_types = tuple("sliding" if i in sliding else "global" for i in range(len(owners_per_layer)))
    return PoolSnapshot(total_blocks, 16, 1024, len(owners_per_layer), layer_types, tuple(blocks))


def test_rows_group_blocks_by_agent_in_agent_order():
    snap = snapshot(12, [["b", "a", "b"], ["a"], []], sliding={1})
    rows = layer_rows(snap, ["a", "b"])
    assert [row.owners for row in rows] == [("a", "b", "b"), ("a",), ()]
    assert [row.sliding for row in rows] == [False, True, False]
    assert row_slots(snap, rows) == 4  # the even share of 12 blocks over 3 layers


def test_a_layer_over_its_share_widens_every_row():
    snap = snapshot(6, [["a"] * 5, []])
    assert row_slots(snap, layer_rows(snap, ["a"])) == 5


class MapApp(App[None]):
    def __init__(self, snap: PoolSnapshot, width: int) -> None:
        super().__init__()
        self.snap, self.map_width = snap, width

    def compose(self) -> ComposeResult:
        grid = BlockMap()
        grid.styles.width = self.map_width
        yield grid

    def on_mount(self) -> None:
        self.query_one(BlockMap).show(self.snap, {"a": RED, "b": GREEN})


def cells(grid: BlockMap, y: int) -> list[tuple[str, str | None]]:
    """(character, colour) of each cell right of the layer label."""
    out = []
    for segment in grid.render_line(y):
        colour = segment.style.color.name if segment.style and segment.style.color else None
        out.extend((char, colour) for char in segment.text)
    return out[LABEL_WIDTH:]


async def test_each_block_is_a_cell_when_the_row_fits():
    app = MapApp(snapshot(8, [["a", "b", "b"], []]), width=LABEL_WIDTH + 10)
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.pause()
        grid = app.query_one(BlockMap)
        assert grid.blocks_per_cell == 1
        assert cells(grid, 0)[:4] == [(USED, RED), (USED, GREEN), (USED, GREEN), (FREE, "grey35")]
        assert [c for c, _ in cells(grid, 1)[:4]] == [FREE] * 4


async def test_a_wide_pool_is_summarised_to_the_widget_width():
    # 3000 blocks over 2 layers: 1500 slots a row, shown in 10 cells of 150 blocks.
    snap = snapshot(3000, [["a"] * 300 + ["b"] * 75, []])
    app = MapApp(snap, width=LABEL_WIDTH + 10)
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.pause()
        grid = app.query_one(BlockMap)
        assert grid.blocks_per_cell == 150
        row = cells(grid, 0)[:10]
        assert row[:2] == [(USED, RED), (USED, RED)]
        assert row[2] == (USED, GREEN)  # b's 75 blocks are half a cell, still drawn
        assert [c for c, _ in row[3:]] == [FREE] * 7


def test_summarised_cells_are_proportional_and_fill_the_row():
    """The README's screenshot drew 2 of 23 cells (9%) for 4% use: every owner got a cell and
    cached blocks rounded up. Now each share is within one cell of exact and the row adds up."""
    cells = apportion({"a": 1, "b": 1, "free": 44}, 23)
    assert cells == {"a": 1, "b": 0, "free": 22} and sum(cells.values()) == 23
    assert apportion({"a": 9, "b": 1, "free": 0}, 3) == {"a": 3, "b": 0, "free": 0}
    assert apportion({"a": 4, "b": 2, "free": 2}, 8) == {"a": 4, "b": 2, "free": 2}
    counts = {"a": 37, "b": 5, "c": 1, "cached": 12, "free": 945}
    for width in range(1, 120):
        cells = apportion(counts, width)
        assert sum(cells.values()) == width
        assert all(abs(cells[k] - n * width / 1000) < 1 for k, n in counts.items())


# -- shared and cached blocks, from a real pool's snapshot ---------------------------


class PanelApp(App[None]):
    def __init__(self, snap: PoolSnapshot) -> None:
        super().__init__()
        self.snap = snap

    def compose(self) -> ComposeResult:
        yield BlockMapPanel()

    def on_mount(self) -> None:
        self.query_one(BlockMapPanel).show(self.snap, {"a": "A", "b": "B"}, {"a": RED, "b": GREEN})


def shared_and_cached_snapshot() -> PoolSnapshot:
    """a's 3 blocks (2 full, 1 partial) forked into b; c wrote 2 full blocks and closed: 2 cached."""
    pool = BlockPool(global_spec(1), 12)
    pool.fork(write_context(pool, "a", PROMPT), "b")
    write_context(pool, "c", list(range(50, 58)))
    pool.free_agent_blocks("c")
    pool.check_invariants()
    return pool.snapshot()


async def test_shared_and_cached_blocks_have_their_own_marks_counts_and_holders():
    snap = shared_and_cached_snapshot()
    assert (snap.num_shared_blocks(), snap.num_cached_blocks(), snap.free_blocks()) == (3, 2, 9)
    app = PanelApp(snap)
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause()
        grid = app.query_one(BlockMap)
        assert grid.blocks_per_cell == 1
        row = cells(grid, 0)[:12]
        # Shared blocks in their own style, not a's colour (the legend counts them once, not for a).
        assert row == [(SHARED, "bright_white")] * 3 + [(CACHED, "grey62")] * 2 + [(FREE, "grey35")] * 7
        legend = app.query_one(".legend", Static).content.plain
        assert "A 0" in legend and "B 0" in legend  # each holds no block alone
        assert f"{SHARED} shared 3 (2 holders)" in legend
        assert f"{CACHED} cached 2" in legend and f"{FREE} free 7" in legend
        # The legend adds up to the pool: own + shared + cached + free.
        assert sum(int(n) for n in re.findall(r" (\d+)\b(?! holders)", legend.split("\nG ")[0])) == snap.total_blocks
        assert grid.tooltip == (f"{SHARED} 3 blocks held by 2: A, B\n{CACHED} 2 cached free blocks: no holder, "
                                "kept for the next prompt that starts the same way")


def test_a_row_keeps_shared_and_own_blocks_of_one_agent_apart():
    snap = shared_and_cached_snapshot()
    (row,) = layer_rows(snap, ["a", "b"])
    assert row.cell_keys == (("a", True),) * 3 and row.num_cached == 2
    assert row_slots(snap, (row,)) == 12


async def test_the_title_names_the_block_format_and_size_when_the_pool_tells_them():
    spec = ModelCacheSpec(n_layers=2, n_kv_heads=4, head_dim=64, dtype="float16", block_tokens=16,
                          layer_types=("global",) * 2, kv_bits=8)
    quantized = BlockPool(spec, 8).snapshot()
    assert spec.bytes_per_block == 2 * 4 * 16 * (64 + 2 * 2)  # packed bytes + a float16 scale and bias a group
    older = dataclasses.replace(quantized, kv_format="")  # a server from before quantized blocks
    none_yet = dataclasses.replace(older, bytes_per_block=0)  # a server's pool before its first snapshot
    cases = ((quantized, "KV blocks · q8/g64 · 8.5 KiB each"), (older, "KV blocks · 8.5 KiB each"),
             (none_yet, "KV block pool"))
    for snap, title in cases:
        app = PanelApp(snap)
        async with app.run_test(size=(60, 20)) as pilot:
            await pilot.pause()
            assert app.query_one(BlockMapPanel).border_title == title


def test_up_to_32_open_agents_never_share_a_colour():
    """Eight colours for up to 32 agents made agents 1 and 9 look the same in the map."""
    from tui.agents import Roster

    roster = Roster()
    agents = [roster.open("") for _ in range(32)]
    assert len({a.colour for a in agents}) == 32
    for agent in agents[:5]:
        roster.close(agent.agent_id)
    for _ in range(5):  # serials 33-37 would repeat agents 1-5's colours while 6-32 stay open
        agents.append(roster.open(""))
    assert len({a.colour for a in roster}) == 32
