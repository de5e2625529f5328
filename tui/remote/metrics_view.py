"""What an OpenAI-compatible server's ``/metrics`` says about its KV cache and queue.

vLLM's names (``vllm:*``; ``blockpool serve`` mirrors them as ``blockpool:*``) first, then
SGLang's and llama.cpp's for the same figures. A figure no name gives stays None, and
the panels say the server does not expose it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

PREFIXES = ("vllm:", "blockpool:")
KV_USAGE = ("kv_cache_usage_perc", "gpu_cache_usage_perc")  # 0..1
OTHER_KV_USAGE = ("sglang:token_usage", "llamacpp:kv_cache_usage_ratio")
RUNNING = ("sglang:num_running_reqs", "llamacpp:requests_processing")
WAITING = ("sglang:num_queue_reqs", "llamacpp:requests_deferred")


@dataclass(frozen=True, slots=True)
class ServerFigures:
    """Figures read from one scrape; None where the server exposes no such metric."""

    kv_usage: float | None = None  # 0..1
    prefix_hit_rate: float | None = None  # 0..1, over the server's lifetime
    running: int | None = None
    waiting: int | None = None
    preemptions: int | None = None
    ttft_mean_s: float | None = None
    num_metrics: int = 0


def samples(text: str) -> dict[str, float]:
    """Sample name (counters without ``_total``) -> value summed over labels."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            values[name] = values.get(name, 0.0) + float(sample.value)
    return values


def read_figures(text: str) -> ServerFigures:
    """Figures of a Prometheus text body; ValueError if it is not Prometheus text."""
    values = samples(text)

    def first(*names: str) -> float | None:
        return next((values[n] for n in names if n in values), None)

    def named(*names: str) -> tuple[str, ...]:
        return tuple(prefix + n for n in names for prefix in PREFIXES)

    hits, queries = first(*named("prefix_cache_hits")), first(*named("prefix_cache_queries"))
    hit_rate = hits / queries if hits is not None and queries else first("sglang:cache_hit_rate")
    ttft_sum, ttft_count = first(*named("time_to_first_token_seconds_sum")), first(
        *named("time_to_first_token_seconds_count"))
    return ServerFigures(
        kv_usage=first(*named(*KV_USAGE), *OTHER_KV_USAGE),
        prefix_hit_rate=hit_rate,
        running=_int(first(*named("num_requests_running"), *RUNNING)),
        waiting=_int(first(*named("num_requests_waiting"), *WAITING)),
        preemptions=_int(first(*named("num_preemptions"))),
        ttft_mean_s=ttft_sum / ttft_count if ttft_sum is not None and ttft_count else None,
        num_metrics=len(values),
    )


def figure_rows(figures: ServerFigures) -> tuple[tuple[str, str], ...]:
    """(label, value) rows for the engine panel; '-' where the server exposes nothing."""
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.0f}%"

    def num(value: int | None) -> str:
        return "-" if value is None else str(value)

    return (
        ("KV cache used", pct(figures.kv_usage)),
        ("prefix hits", pct(figures.prefix_hit_rate)),
        ("running", num(figures.running)),
        ("waiting", num(figures.waiting)),
        ("preemptions", num(figures.preemptions)),
        ("TTFT mean", "-" if figures.ttft_mean_s is None else f"{1000 * figures.ttft_mean_s:.0f} ms"),
    )


def missing(figures: ServerFigures) -> tuple[str, ...]:
    """What the server's metrics do not tell, in words."""
    named: Mapping[str, object] = {"KV cache usage": figures.kv_usage, "prefix cache hits": figures.prefix_hit_rate,
                                   "running/waiting requests": figures.running, "preemptions": figures.preemptions}
    return tuple(label for label, value in named.items() if value is None)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
