"""The history panel: buckets of pool use, tok/s, queue and spills that fill gaps as they mean,
and a panel that scrolls while the engine is idle."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from engine.owner_messages import EngineStats
from pool.snapshot import BlockInfo, PoolSnapshot
from telemetry import TelemetryState
from tui.history import BUCKET_S, PanelHistory, figure
from tui.widgets import HistoryPanel

pytestmark = pytest.mark.anyio


def stats(used: int, tokens: int, queued: int = 0, evictions: int = 0) -> EngineStats:
    blocks = tuple(BlockInfo(i, 0, "a", 0, 256) for i in range(used))
    pool = PoolSnapshot(total_blocks=100, block_tokens=256, bytes_per_block=1, n_layers=1,
                        layer_types=("global",), blocks=blocks)
    state = TelemetryState(tokens_generated=tokens, evictions=evictions)
    return EngineStats(pool=pool, telemetry=state, num_queued=queued, num_active=1, context_tokens={})


def test_buckets_keep_gauges_over_gaps_and_count_rates_per_second():
    history = PanelHistory()
    history.observe(stats(10, 0), now_s=100.0)  # bucket 20
    history.observe(stats(30, 50, queued=2), now_s=102.0)  # still bucket 20: the peak is kept
    history.observe(stats(20, 100, evictions=1), now_s=106.0)  # bucket 21
    # Nothing arrives for 3 buckets (idle): the pool stays at 20, tok/s and spills are 0.
    now = 5 * BUCKET_S + 100.0 + 1.0  # in bucket 25, one second in
    assert history.series("pool", now, 10) == [30, 20, 20, 20, 20, 20]
    assert history.series("queue", now, 10) == [2, 0, 0, 0, 0, 0]
    # bucket 20 ran from the first stats (100 s) to its end (105 s): 50 tokens in 5 s.
    assert history.series("tok_s", now, 10) == [10.0, 10.0, 0.0, 0.0, 0.0, 0.0]
    assert history.series("spills", now, 10)[1] == pytest.approx(60 / BUCKET_S)  # one spill in 5 s, a minute's rate
    assert history.series("pool", now, 2) == [20, 20]  # only the last buckets when the panel is narrow


def test_figures_fit_five_characters():
    assert [figure(v) for v in (0, 7.4, 42.0, 999, 1234, 56_000)] == ["0", "7.4", "42", "999", "1.2k", "56k"]


class Host(App[None]):
    def __init__(self, panel: HistoryPanel) -> None:
        super().__init__()
        self.panel = panel

    def compose(self) -> ComposeResult:
        yield self.panel


async def test_the_panel_draws_each_metric_with_now_avg_peak_and_scrolls_while_idle():
    clock = [1000.0]
    panel = HistoryPanel(clock=lambda: clock[0])
    panel.styles.width = 30
    history = PanelHistory()
    history.observe(stats(40, 0), clock[0])
    clock[0] += BUCKET_S
    history.observe(stats(40, 60), clock[0])
    async with Host(panel).run_test(size=(40, 14)) as pilot:
        panel.history = history
        panel.redraw()
        await pilot.pause()
        lines = str(panel.render()).splitlines()
        assert lines[0].split() == ["now", "avg", "peak"]
        assert lines[1].split() == ["pool", "40", "40", "40"]
        assert lines[3].split()[0] == "tok/s"
        assert panel.border_subtitle == "5 s a bar · last 10 s"
        clock[0] += 6 * BUCKET_S  # idle: no stats arrive
        panel.redraw()
        assert panel.border_subtitle == "5 s a bar · last 40 s"
        assert str(panel.render()).splitlines()[3].split()[1] == "0"  # now: nothing generated


async def test_a_short_terminal_hides_the_history_and_a_tall_one_shows_it():
    from tests.scripted import scripted_app

    app = scripted_app(("hi",))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert not app.query_one(HistoryPanel).display
        await pilot.resize_terminal(120, 45)
        await pilot.pause()
        assert app.query_one(HistoryPanel).display
