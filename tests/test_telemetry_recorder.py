"""The recorder stays consistent under concurrent publishers and survives bad subscribers."""

from __future__ import annotations

import logging
import threading

import pytest

from telemetry import (
    EMPTY_STATS,
    EngineStep,
    Eviction,
    Gather,
    NullRecorder,
    PoolSnapshotEvent,
    Recorder,
    RequestFinished,
    Scatter,
    TelemetryState,
)


def gather(
    ms: float, *, agent_id: str = "a", num_tokens: int = 1, ts: float | None = None
) -> Gather:
    extra = {} if ts is None else {"ts": ts}
    return Gather(
        agent_id=agent_id, num_blocks=1, num_bytes=64, ms=ms, num_tokens=num_tokens, **extra
    )


def step(ts: float, *, ms: float, tokens: int) -> EngineStep:
    return EngineStep(
        ts=ts, batch_size=1, tokens_generated=tokens, prefill_tokens=0, ms=ms, queued=0
    )


def finished(uid: int, *, ttft_ms: float | None, error: str | None = None) -> RequestFinished:
    return RequestFinished(
        uid=uid,
        agent_id="a",
        prompt_tokens=4,
        cached_tokens=0,
        generated_tokens=8,
        ttft_ms=ttft_ms,
        decode_tok_s=None if ttft_ms is None else 100.0,
        finish_reason="stop" if error is None else "error",
        error=error,
    )


def test_fresh_state_is_empty() -> None:
    state = Recorder().state()
    assert state == TelemetryState()
    assert state.gather == EMPTY_STATS
    assert (state.last_gather, state.last_step, state.last_pool, state.tokens_per_s) == (None,) * 4
    assert state.event_count == 0


def test_concurrent_publishers_and_reader() -> None:
    num_threads, per_thread, history = 8, 2_000, 10_000
    recorder = Recorder(history=history)
    errors: list[BaseException] = []
    done = threading.Event()

    def publisher(i: int) -> None:
        try:
            for n in range(per_thread):
                recorder.publish(gather(0.1 + n % 7, agent_id=f"t{i}", num_tokens=n))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while not done.is_set():
                state = recorder.state()
                assert state.event_count <= num_threads * per_thread
                assert state.gather.count <= 256
                assert len(recorder.events()) <= history
                recorder.events(kind="gather", since=0.0)
        except BaseException as exc:
            errors.append(exc)

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    publishers = [threading.Thread(target=publisher, args=(i,)) for i in range(num_threads)]
    for t in publishers:
        t.start()
    for t in publishers:
        t.join()
    done.set()
    reader_thread.join()

    assert errors == []
    state = recorder.state()
    assert state.event_count == num_threads * per_thread
    assert state.gather.count == 256
    events = recorder.events()
    assert len(events) == history == len(recorder)
    # Each publisher's events stay in its own publish order inside the ring.
    for i in range(num_threads):
        seq = [e.num_tokens for e in events if e.agent_id == f"t{i}"]
        assert seq == sorted(seq)


def test_state_windows_and_last_events() -> None:
    recorder = Recorder(window=4)
    for ms in range(1, 11):
        recorder.publish(gather(float(ms)))
    recorder.publish(Scatter(agent_id="a", num_blocks=1, num_bytes=1, ms=0.5, num_tokens=1))
    state = recorder.state()
    assert state.gather_ms == (7.0, 8.0, 9.0, 10.0)
    assert state.gather.count == 4
    assert state.gather.p50 == pytest.approx(8.5)
    assert state.last_gather is not None and state.last_gather.ms == 10.0
    assert state.scatter_ms == (0.5,)
    assert state.event_count == 11


def test_state_is_cached_until_next_publish() -> None:
    recorder = Recorder()
    recorder.publish(gather(1.0))
    first = recorder.state()
    assert recorder.state() is first
    recorder.publish(gather(2.0))
    assert recorder.state() is not first
    assert recorder.state().gather.count == 2


def test_tokens_per_s_uses_wall_span_of_recent_steps() -> None:
    recorder = Recorder(rate_window_s=5.0)
    assert recorder.state().tokens_per_s is None
    recorder.publish(step(100.0, ms=100.0, tokens=10))  # ran 99.9 .. 100.0
    assert recorder.state().tokens_per_s == pytest.approx(10 / 0.1)
    recorder.publish(step(100.2, ms=100.0, tokens=10))  # wall span 99.9 .. 100.2
    assert recorder.state().tokens_per_s == pytest.approx(20 / 0.3)
    recorder.publish(step(110.0, ms=50.0, tokens=4))  # older steps fall out of the window
    assert recorder.state().tokens_per_s == pytest.approx(4 / 0.05)
    assert recorder.state().step.count == 3
    assert recorder.state().last_step is not None


def test_counters_and_last_pool() -> None:
    recorder = Recorder()
    recorder.publish(finished(1, ttft_ms=20.0))
    recorder.publish(finished(2, ttft_ms=None, error="oom"))
    recorder.publish(Eviction(agent_id="a", num_blocks=3, reason="spill"))
    pool = PoolSnapshotEvent(
        total_blocks=4, used_blocks=0, n_layers=1, block_tokens=16, bytes_per_block=8,
        layer_types=("full",), owners=(),
    )
    recorder.publish(pool)
    state = recorder.state()
    assert (state.requests_finished, state.requests_failed, state.evictions) == (2, 1, 1)
    assert state.ttft.count == 1  # the unmeasured ttft is left out, not a zero
    assert state.last_pool == pool


def test_failing_subscriber_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    seen: list[float] = []

    def broken(event: object) -> None:
        raise RuntimeError("subscriber bug")

    recorder.subscribe(broken)
    recorder.subscribe(lambda e: seen.append(e.ms))
    with caplog.at_level(logging.ERROR, logger="telemetry.recorder"):
        recorder.publish(gather(1.0))
        recorder.publish(gather(2.0))
    assert seen == [1.0, 2.0]
    assert recorder.state().event_count == 2
    assert sum("subscriber bug" in (r.exc_text or "") for r in caplog.records) == 2


def test_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    recorder = Recorder()
    seen: list[str] = []
    unsubscribe = recorder.subscribe(lambda e: seen.append(e.kind))
    assert recorder.has_subscribers
    recorder.publish(gather(1.0))
    unsubscribe()
    unsubscribe()
    recorder.publish(gather(2.0))
    assert seen == ["gather"]
    assert not recorder.has_subscribers


def test_events_filters_by_kind_and_since() -> None:
    recorder = Recorder()
    recorder.publish(gather(1.0, ts=10.0))
    recorder.publish(step(11.0, ms=1.0, tokens=1))
    recorder.publish(gather(2.0, ts=12.0))
    assert [e.ts for e in recorder.events(kind="gather")] == [10.0, 12.0]
    assert [e.ts for e in recorder.events(since=11.0)] == [11.0, 12.0]
    assert [e.ts for e in recorder.events(kind="gather", since=11.0)] == [12.0]
    with pytest.raises(ValueError, match="unknown event kind 'gathers'"):
        recorder.events(kind="gathers")


def test_reset_forgets_events_but_keeps_subscribers() -> None:
    recorder = Recorder()
    seen: list[str] = []
    recorder.subscribe(lambda e: seen.append(e.kind))
    recorder.publish(gather(1.0))
    recorder.reset()
    assert recorder.events() == []
    assert recorder.state() == TelemetryState()
    recorder.publish(gather(1.0))
    assert recorder.state().event_count == 1
    assert len(seen) == 2


def test_disabled_and_null_recorders_record_nothing() -> None:
    seen: list[str] = []
    disabled = Recorder(enabled=False)
    disabled.subscribe(lambda e: seen.append(e.kind))
    disabled.publish(gather(1.0))
    assert (disabled.state().event_count, seen) == (0, [])

    null = NullRecorder()
    assert isinstance(null, Recorder)
    assert not null.enabled
    unsubscribe = null.subscribe(lambda e: seen.append(e.kind))
    null.enabled = True  # still records nothing
    null.publish(gather(1.0))
    unsubscribe()
    assert (null.state().event_count, null.events(), seen) == (0, [], [])
    assert not null.has_subscribers


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="history must be >= 1, got 0"):
        Recorder(history=0)
    with pytest.raises(ValueError, match="window"):
        Recorder(window=0)
    with pytest.raises(ValueError, match="rate_window_s"):
        Recorder(rate_window_s=0.0)
    with pytest.raises(TypeError, match="dict"):
        Recorder().publish({"kind": "gather"})  # type: ignore[arg-type]
