"""The block map's rows: owners grouped per layer, and summarised when wider than the widget."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from pool import BlockInfo, PoolSnapshot
from tui.widgets import BlockMap
from tui.widgets.block_map import FREE, LABEL_WIDTH, USED, layer_rows, owner_cells, row_slots

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


def test_every_owner_keeps_a_cell_when_summarised():
    assert owner_cells(["a", "b"], blocks_per_cell=2, width=23) == {"a": 1, "b": 1}
    assert owner_cells(["a"] * 9 + ["b"], blocks_per_cell=3, width=3) == {"a": 2, "b": 1}
    assert owner_cells(["a"] * 4 + ["b"] * 2, blocks_per_cell=1, width=8) == {"a": 4, "b": 2}
