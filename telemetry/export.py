"""Event logs on disk: JSONL writing, reading, replay, and a CSV summary."""

from __future__ import annotations

import csv
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from pydantic import ValidationError

from .events import EngineStep, Event, Gather, RequestFinished, Scatter, parse_event
from .recorder import Recorder
from .stats import LatencyStats, latency_stats

logger = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]

CSV_COLUMNS = ("kind", "metric", "count", "min", "p50", "p95", "p99", "mean", "std", "max")


class JsonlWriter:
    """A subscriber that appends one JSON object per event per line.

    Each line is flushed as it is written, so a crashed process loses at most
    the line in flight (no fsync: an OS crash can lose more).
    """

    def __init__(self, path: StrPath) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot open telemetry log {self.path} for appending: {exc.strerror}"
            ) from exc

    def __call__(self, event: Event) -> None:
        line = event.model_dump_json() + "\n"
        with self._lock:
            if self._file is None:
                raise ValueError(f"JsonlWriter({self.path}) is closed; unsubscribe it first")
            self._file.write(line)
            self._file.flush()

    def attach(self, recorder: Recorder) -> JsonlWriter:
        """Subscribe to ``recorder``; ``close()`` will unsubscribe."""
        if self._unsubscribe is not None:
            raise ValueError(f"JsonlWriter({self.path}) is already attached to a recorder")
        self._unsubscribe = recorder.subscribe(self)
        return self

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    @property
    def closed(self) -> bool:
        return self._file is None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventReader:
    """Iterates the events of a JSONL log; ``skipped_lines`` lists bad lines when skipping."""

    def __init__(self, path: StrPath, *, skip_invalid: bool = False) -> None:
        self.path = Path(path)
        self.skip_invalid = skip_invalid
        self.skipped_lines: list[int] = []
        self._file: IO[str] | None = self.path.open("r", encoding="utf-8")
        self._lineno = 0

    @property
    def skipped(self) -> int:
        return len(self.skipped_lines)

    def __iter__(self) -> EventReader:
        return self

    def __next__(self) -> Event:
        while self._file is not None:
            line = self._file.readline()
            if not line:
                self.close()
                break
            self._lineno += 1
            if not line.strip():
                continue
            event = self._parse(line)
            if event is not None:
                return event
        raise StopIteration

    def _parse(self, line: str) -> Event | None:
        try:
            return parse_event(line)
        except ValidationError as exc:
            if not self.skip_invalid:
                self.close()
                raise ValueError(
                    f"{self.path}:{self._lineno}: invalid telemetry event "
                    f"({exc.error_count()} errors): {exc.errors()[0]['msg']}"
                ) from exc
            logger.warning("skipping invalid telemetry event at %s:%d", self.path, self._lineno)
            self.skipped_lines.append(self._lineno)
            return None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EventReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_events(path: StrPath, *, skip_invalid: bool = False) -> EventReader:
    """Read a JSONL log back; a bad line raises ValueError naming file and line.

    With ``skip_invalid=True`` bad lines are logged, skipped and counted in the
    returned reader's ``skipped`` / ``skipped_lines``.
    """
    return EventReader(path, skip_invalid=skip_invalid)


def replay(
    path: StrPath,
    recorder: Recorder,
    *,
    speed: float | None = None,
    skip_invalid: bool = False,
) -> int:
    """Re-publish a log into ``recorder``; returns how many events were published.

    ``speed=None`` publishes as fast as possible; otherwise the gaps between the
    original timestamps are slept, divided by ``speed`` (2.0 = twice as fast).
    Events keep their original ``ts``, so the recorder ends in the same state.
    """
    if speed is not None and not speed > 0:
        raise ValueError(f"replay speed must be > 0 or None, got {speed}")
    count = 0
    prev_ts: float | None = None
    with read_events(path, skip_invalid=skip_invalid) as reader:
        for event in reader:
            if speed is not None and prev_ts is not None and event.ts > prev_ts:
                time.sleep((event.ts - prev_ts) / speed)
            prev_ts = event.ts
            recorder.publish(event)
            count += 1
    return count


def summarize(events: Iterable[Event]) -> dict[tuple[str, str], LatencyStats]:
    """LatencyStats per (event kind, metric) for the metrics the CSV summary holds."""
    samples: dict[tuple[str, str], list[float]] = {
        ("gather", "ms"): [],
        ("scatter", "ms"): [],
        ("engine_step", "ms"): [],
        ("request_finished", "ttft_ms"): [],
        ("request_finished", "decode_tok_s"): [],
    }
    for event in events:
        match event:
            case Gather() | Scatter() | EngineStep():
                samples[(event.kind, "ms")].append(event.ms)
            case RequestFinished():
                # None means "not measured" and is left out, not counted as zero.
                if event.ttft_ms is not None:
                    samples[("request_finished", "ttft_ms")].append(event.ttft_ms)
                if event.decode_tok_s is not None:
                    samples[("request_finished", "decode_tok_s")].append(event.decode_tok_s)
    return {key: latency_stats(values) for key, values in samples.items()}


def write_csv_summary(
    events: Iterable[Event], path: StrPath
) -> dict[tuple[str, str], LatencyStats]:
    """Write one row per (kind, metric) with the LatencyStats columns; None cells stay blank."""
    summary = summarize(events)
    with Path(path).open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for (kind, metric), stats in summary.items():
            writer.writerow([kind, metric, stats.count, *(_cell(v) for v in _stat_values(stats))])
    return summary


def _stat_values(stats: LatencyStats) -> tuple[float | None, ...]:
    return (stats.min, stats.p50, stats.p95, stats.p99, stats.mean, stats.std, stats.max)


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)
