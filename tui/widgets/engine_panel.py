"""Engine figures: batch size, throughput, step time, pool use, queue, evictions, block sharing."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.owner_messages import EngineStats

Rows = tuple[tuple[str, str], ...]


class EnginePanel(Static):
    """Redrawn from the latest ``EngineStats`` a few times a second, only when a figure changed."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(Text("engine starting…", style="dim"), id=id)
        self.border_title = "Engine"
        self._rows: Rows = ()

    def show(self, stats: EngineStats | None) -> None:
        if stats is not None:
            self.show_rows(_rows(stats))

    def show_rows(self, rows: Rows) -> None:
        """(label, value) rows of another source (a server's metrics)."""
        if rows != self._rows:
            # The row count never changes after the first draw, so no layout pass is needed.
            self.update(_table(rows, self.content_size.width), layout=len(rows) != len(self._rows))
            self._rows = rows


def _rows(stats: EngineStats) -> Rows:
    state = stats.telemetry
    step = state.last_step
    pool = stats.pool
    return (
        ("batch", str(step.batch_size if step is not None and stats.num_active else 0)),
        # Idle, the last figures are history, not now: said so rather than shown as current.
        ("tok/s", "-" if state.tokens_per_s is None else _now_or_last(f"{state.tokens_per_s:.1f}", stats)),
        ("step", "-" if step is None else _now_or_last(f"{step.ms:.0f} ms", stats, f" (p50 {state.step.p50:.0f})")),
        ("pool used", f"{pool.used_blocks():,} blocks"),
        # Free as the block map's legend counts it: empty blocks; cached ones (also reusable) have their own row.
        ("pool free", f"{pool.free_blocks() - pool.num_cached_blocks():,} blocks"),
        ("queued", str(stats.num_queued)),
        ("finished", f"{state.requests_finished} ({state.requests_failed} failed)"),
        ("evictions", _evictions(state.evictions, state.restores, state.restores_from_disk)),
        *_sharing_rows(stats),
    )


def _evictions(evictions: int, restores: int, from_disk: int) -> str:
    """Spills, and how many came back: from their spill file, or by reading their tokens again (a slower path)."""
    if not restores:
        return f"{evictions} (0 back)"
    reread = restores - from_disk
    return f"{evictions} ({from_disk} from disk{f', {reread} re-read' if reread else ''})"


def _now_or_last(value: str, stats: EngineStats, detail: str = "") -> str:
    busy = stats.num_active or stats.num_queued
    return value + detail if busy else f"idle · last {value}"


def _sharing_rows(stats: EngineStats) -> Rows:
    """Prefix hit rate (reused / looked-up prompt tokens) with the tokens reused, blocks saved, cached blocks."""
    sharing, pool = stats.telemetry.sharing, stats.pool
    rate = sharing.hit_rate
    return (
        ("hit rate", "-" if rate is None else f"{rate:.0%} · {sharing.reused_tokens:,} tok"),
        ("shared", f"{pool.num_saved_blocks():,} blocks saved"),
        ("cached", f"{pool.num_cached_blocks():,} blocks"),
    )


def _table(rows: Rows, width: int) -> Text:
    """Labels left, values right-aligned to ``width``: a Text, several times cheaper to draw than a Rich table."""
    width = max([width, *(len(label) + 1 + len(value) for label, value in rows)])
    text = Text()
    for index, (label, value) in enumerate(rows):
        text.append(label, style="dim")
        text.append(value.rjust(width - len(label)))
        if index < len(rows) - 1:
            text.append("\n")
    return text
