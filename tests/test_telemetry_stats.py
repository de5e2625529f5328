"""Latency stats, histograms and the rolling window give known answers for known inputs."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from telemetry import (
    EMPTY_STATS,
    LatencyStats,
    RollingWindow,
    histogram,
    latency_stats,
    text_histogram,
)

# (samples, hand-computed p50, p95, p99) with linear interpolation at rank q/100*(n-1).
KNOWN_PERCENTILES = [
    ([1.0, 2.0, 3.0, 4.0], 2.5, 3.85, 3.97),  # ranks 1.5, 2.85, 2.97
    ([50.0, 10.0, 40.0, 20.0, 30.0], 30.0, 48.0, 49.6),  # unsorted; ranks 2, 3.8, 3.96
    ([float(i) for i in range(101)], 50.0, 95.0, 99.0),  # ranks land exactly on samples
    ([0.0, 100.0], 50.0, 95.0, 99.0),
]


@pytest.mark.parametrize(("samples", "p50", "p95", "p99"), KNOWN_PERCENTILES)
def test_percentiles_match_hand_computed_and_numpy(
    samples: list[float], p50: float, p95: float, p99: float
) -> None:
    stats = latency_stats(samples)
    assert (stats.p50, stats.p95, stats.p99) == pytest.approx((p50, p95, p99))
    expected = np.percentile(samples, [50, 95, 99])
    assert (stats.p50, stats.p95, stats.p99) == pytest.approx(tuple(expected))


def test_mean_and_population_std() -> None:
    stats = latency_stats([1.0, 2.0, 3.0, 4.0])
    assert stats.count == 4
    assert (stats.min, stats.max) == (1.0, 4.0)
    assert stats.mean == pytest.approx(2.5)
    assert stats.std == pytest.approx(math.sqrt(1.25))  # ddof=0
    assert stats.std == pytest.approx(float(np.std([1.0, 2.0, 3.0, 4.0])))


def test_empty_window_has_no_fake_zeros() -> None:
    stats = latency_stats([])
    assert stats == LatencyStats(count=0)
    assert stats == EMPTY_STATS
    assert stats.empty
    for name in ("min", "p50", "p95", "p99", "mean", "std", "max"):
        assert getattr(stats, name) is None


def test_single_sample_is_that_value_everywhere() -> None:
    stats = latency_stats([7.25])
    assert stats == LatencyStats(
        count=1, min=7.25, p50=7.25, p95=7.25, p99=7.25, mean=7.25, std=0.0, max=7.25
    )


def test_stats_fields_are_python_floats() -> None:
    stats = latency_stats(np.array([1.0, 2.0], dtype=np.float32))
    assert type(stats.p50) is float
    assert type(stats.count) is int


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [float("inf")], [[1.0, 2.0]]])
def test_latency_stats_rejects_bad_samples(bad: list) -> None:
    with pytest.raises(ValueError, match="latency_stats"):
        latency_stats(bad)


# Huge magnitudes may overflow mean/std (numpy warns); percentiles must stay ordered anyway.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=200))
def test_percentiles_are_ordered_and_bounded(samples: list[float]) -> None:
    stats = latency_stats(samples)
    assert stats.count == len(samples)
    assert stats.min == min(samples)
    assert stats.max == max(samples)
    assert stats.min <= stats.p50 <= stats.p95 <= stats.p99 <= stats.max


def test_histogram_with_given_edges_counts_below_and_above() -> None:
    hist = histogram([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0], bins=[0.0, 2.0, 4.0])
    assert hist.edges == (0.0, 2.0, 4.0)
    assert hist.counts == (2, 3)  # [0, 2) holds 0, 1; [2, 4] holds 2, 3 and the closed edge 4
    assert (hist.below, hist.above) == (1, 2)
    assert hist.total == 8
    assert hist.num_bins == 2


def test_histogram_equal_width_bins_close_the_last_bin() -> None:
    samples = [float(i) for i in range(11)]
    hist = histogram(samples, num_bins=5)
    assert hist.edges == (0.0, 2.0, 4.0, 6.0, 8.0, 10.0)
    assert hist.counts == (2, 2, 2, 2, 3)
    assert (hist.below, hist.above) == (0, 0)
    assert hist.counts == tuple(np.histogram(samples, bins=5)[0])


def test_histogram_of_one_repeated_value_is_centred() -> None:
    hist = histogram([3.0, 3.0, 3.0], num_bins=2)
    assert hist.edges == (2.5, 3.0, 3.5)
    assert hist.counts == (0, 3)


def test_histogram_of_nothing_is_all_zero() -> None:
    assert histogram([], num_bins=4).counts == (0, 0, 0, 0)
    hist = histogram([], bins=[1.0, 2.0, 3.0])
    assert (hist.counts, hist.below, hist.above, hist.total) == ((0, 0), 0, 0, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": [1.0]}, "at least 2 edges"),
        ({"bins": [1.0, 1.0, 2.0]}, "strictly increasing"),
        ({"bins": [0.0, float("nan")]}, "non-finite"),
        ({"num_bins": 0}, "num_bins"),
    ],
)
def test_histogram_rejects_bad_bins(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        histogram([1.0], **kwargs)


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), max_size=100))
def test_histogram_counts_every_sample_once(samples: list[float]) -> None:
    assert histogram(samples, bins=[-10.0, 0.0, 10.0]).total == len(samples)
    assert histogram(samples, num_bins=7).total == len(samples)


def test_text_histogram_scales_bars_to_the_peak() -> None:
    hist = histogram([0.5, 1.5, 1.5, 1.6, -3.0], bins=[0.0, 1.0, 2.0])
    lines = text_histogram(hist, width=10).splitlines()
    assert len(lines) == 3  # below line, two bins, no above line
    assert lines[0].split()[-1] == "1"
    assert lines[2].count("█") == 10  # the peak bin fills the width
    assert lines[1].count("█") == round(10 * 1 / 3)
    assert "[1, 2]" in lines[2]


def test_text_histogram_rejects_zero_width() -> None:
    with pytest.raises(ValueError, match="width"):
        text_histogram(histogram([1.0]), width=0)


def test_rolling_window_keeps_the_last_maxlen() -> None:
    window = RollingWindow(3)
    for x in [1.0, 2.0, 3.0, 4.0, 5.0]:
        window.add(x)
    assert window.values() == [3.0, 4.0, 5.0]
    assert len(window) == 3
    assert window.stats().p50 == 4.0
    window.clear()
    assert window.stats() == EMPTY_STATS


def test_rolling_window_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="maxlen"):
        RollingWindow(0)
    with pytest.raises(ValueError, match="non-finite"):
        RollingWindow(2).add(float("nan"))


def test_rolling_window_is_thread_safe() -> None:
    window = RollingWindow(100)
    errors: list[BaseException] = []

    def writer() -> None:
        for i in range(5_000):
            window.add(float(i))

    def reader() -> None:
        try:
            for _ in range(500):
                assert len(window.values()) <= 100
                window.stats()
        except BaseException as exc:  # surfaced below; threads swallow otherwise
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(window.values()) == 100
