"""JSONL logs round-trip, bad lines are reported by number, replay and CSV summaries agree."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from telemetry import (
    BlocksAllocated,
    BlocksFreed,
    EngineStep,
    Event,
    Eviction,
    Gather,
    JsonlWriter,
    PoolSnapshotEvent,
    Recorder,
    RequestFinished,
    RequestSubmitted,
    Scatter,
    read_events,
    replay,
    write_csv_summary,
)
from telemetry import export


def one_of_each(t0: float = 1_000.0) -> list[Event]:
    """Every event kind once (RequestFinished twice: measured and failed), 10 ms apart."""
    events: list[Event] = [
        BlocksAllocated(agent_id="a", layer_id=1, count=2, block_ids=(3, 4)),
        Gather(agent_id="a", num_blocks=2, num_bytes=8192, ms=0.5, num_tokens=32),
        EngineStep(batch_size=1, tokens_generated=1, prefill_tokens=32, ms=20.0, queued=0),
        Scatter(agent_id="a", num_blocks=1, num_bytes=4096, ms=0.25, num_tokens=1),
        RequestSubmitted(uid=1, agent_id="a", prompt_tokens=32, cached_tokens=0, max_tokens=8),
        RequestFinished(
            uid=1, agent_id="a", prompt_tokens=32, cached_tokens=0, generated_tokens=8,
            ttft_ms=21.0, decode_tok_s=90.0, finish_reason="length",
        ),
        RequestFinished(
            uid=2, agent_id="b", prompt_tokens=3, cached_tokens=0, generated_tokens=0,
            ttft_ms=None, decode_tok_s=None, finish_reason="error", error="bad prompt",
        ),
        PoolSnapshotEvent(
            total_blocks=8, used_blocks=2, n_layers=2, block_tokens=16, bytes_per_block=4096,
            layer_types=("full", "full"), owners=((3, 1, "a"), (4, 1, "a")),
        ),
        Eviction(agent_id="a", num_blocks=2, reason="spill"),
        BlocksFreed(agent_id="a", layer_id=1, count=2, block_ids=(3, 4)),
    ]
    return [e.model_copy(update={"ts": t0 + 0.01 * i}) for i, e in enumerate(events)]


def write_log(path: Path, events: list[Event]) -> None:
    with JsonlWriter(path) as writer:
        for event in events:
            writer(event)


def test_jsonl_round_trip_of_every_kind(tmp_path: Path) -> None:
    events = one_of_each()
    path = tmp_path / "logs" / "run.jsonl"  # parent folder is created
    write_log(path, events)
    assert len(path.read_text().splitlines()) == len(events)
    assert list(read_events(path)) == events


def test_writer_attached_to_recorder_flushes_each_line(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    recorder = Recorder()
    writer = JsonlWriter(path).attach(recorder)
    recorder.publish(Eviction(agent_id="a", num_blocks=1, reason="spill"))
    # Readable before close: the line was flushed as it was written.
    assert [e.kind for e in read_events(path)] == ["eviction"]
    writer.close()
    assert writer.closed
    assert not recorder.has_subscribers
    recorder.publish(Eviction(agent_id="a", num_blocks=1, reason="spill"))
    assert len(list(read_events(path))) == 1


def test_writer_appends_to_an_existing_log(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    events = one_of_each()
    write_log(path, events[:3])
    write_log(path, events[3:])
    assert list(read_events(path)) == events


def test_closed_writer_refuses_events(tmp_path: Path) -> None:
    writer = JsonlWriter(tmp_path / "x.jsonl")
    writer.close()
    with pytest.raises(ValueError, match="is closed"):
        writer(Eviction(agent_id="a", num_blocks=1, reason="spill"))


def test_unwritable_location_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where a folder should be")
    path = blocker / "run.jsonl"
    with pytest.raises(OSError, match=f"cannot open telemetry log {path}"):
        JsonlWriter(path)


def test_corrupt_line_raises_with_file_and_line_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    events = one_of_each()
    write_log(path, events[:3])
    lines = path.read_text().splitlines()
    lines.insert(1, '{"kind": "gather", "agent_id": "a"')  # truncated, as after a crash
    path.write_text("\n".join(lines) + "\n\n")  # trailing blank line is fine
    reader = read_events(path)
    assert next(reader) == events[0]
    with pytest.raises(ValueError, match=f"{path}:2: invalid telemetry event"):
        next(reader)


def test_skip_invalid_skips_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    events = one_of_each()
    write_log(path, events[:2])
    with path.open("a") as f:
        f.write("not json\n")
        f.write('{"kind": "teleport"}\n')
    write_log(path, events[2:3])
    reader = read_events(path, skip_invalid=True)
    assert list(reader) == events[:3]
    assert reader.skipped == 2
    assert reader.skipped_lines == [3, 4]


def test_replay_rebuilds_the_same_state(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    live = Recorder()
    with JsonlWriter(path).attach(live):
        for event in one_of_each() * 3:
            live.publish(event)
    fresh = Recorder()
    assert replay(path, fresh) == 30
    assert fresh.state() == live.state()
    assert fresh.events() == live.events()
    assert fresh.state().tokens_per_s is not None


def test_replay_with_speed_sleeps_scaled_gaps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.jsonl"
    write_log(path, one_of_each())  # 9 gaps of 10 ms = 90 ms of recorded time
    slept: list[float] = []
    monkeypatch.setattr(export.time, "sleep", slept.append)
    replay(path, Recorder(), speed=3.0)
    assert slept == pytest.approx([0.01 / 3] * 9)
    with pytest.raises(ValueError, match="speed must be > 0"):
        replay(path, Recorder(), speed=0.0)


def test_csv_summary_has_one_row_per_metric(tmp_path: Path) -> None:
    events = one_of_each() + [
        Gather(agent_id="a", num_blocks=1, num_bytes=1, ms=1.5, num_tokens=1),
    ]
    events = [e for e in events if e.kind != "scatter"]  # leave one metric empty
    path = tmp_path / "summary.csv"
    summary = write_csv_summary(events, path)
    with path.open(newline="") as f:
        rows = {(r["kind"], r["metric"]): r for r in csv.DictReader(f)}
    assert list(rows) == [
        ("gather", "ms"),
        ("scatter", "ms"),
        ("engine_step", "ms"),
        ("request_finished", "ttft_ms"),
        ("request_finished", "decode_tok_s"),
    ]
    gather_row = rows[("gather", "ms")]
    assert gather_row["count"] == "2"
    assert float(gather_row["p50"]) == pytest.approx(1.0)
    assert float(gather_row["max"]) == 1.5
    assert rows[("scatter", "ms")]["count"] == "0"
    assert all(rows[("scatter", "ms")][c] == "" for c in ("min", "p50", "std", "max"))
    assert rows[("request_finished", "ttft_ms")]["count"] == "1"  # None ttft left out
    assert rows[("engine_step", "ms")]["std"] == "0.0"
    assert summary[("gather", "ms")].count == 2
