"""Prometheus metrics named and meant like vLLM's, so a vLLM dashboard maps one to one.

vLLM writes ``vllm:<name>``; this server writes ``blockpool:<name>`` with the same
name, type, unit and ``model_name`` label (counters get prometheus' ``_total``).
The pool's own figures follow under ``blockpool:pool_*``. All updates come from the
engine thread; prometheus-client's metrics are thread-safe for the scrape.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from telemetry import Event, Eviction, Gather, Preemption, Restore, Scatter

PREFIX = "blockpool:"
# vLLM's buckets (seconds) for time to first token and inter-token latency.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)
COPY_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    """One registry per server (tests start several); ``render()`` is the /metrics body."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        labels = ["model_name"]

        def gauge(name: str, doc: str, extra: Iterable[str] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, [*labels, *extra], registry=self.registry)

        def counter(name: str, doc: str, extra: Iterable[str] = ()) -> Counter:
            return Counter(PREFIX + name, doc, [*labels, *extra], registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(PREFIX + name, doc, labels, buckets=buckets, registry=self.registry)

        # -- vLLM's names -----------------------------------------------------------
        self.running = gauge("num_requests_running", "Number of requests in the decode batch.")
        self.waiting = gauge("num_requests_waiting", "Number of requests waiting to enter the batch.")
        self.kv_usage = gauge("kv_cache_usage_perc", "KV-cache usage: used blocks / all blocks (1 = 100 percent).")
        self.prefix_queries = counter("prefix_cache_queries", "Prefix cache queries, in prompt tokens.")
        self.prefix_hits = counter("prefix_cache_hits", "Prefix cache hits, in prompt tokens served from blocks.")
        self.preemptions = counter(
            "num_preemptions", "Replies paused to give their blocks to older ones (they resume where they stopped).")
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens of admitted requests (cached included).")
        self.generation_tokens = counter("generation_tokens", "Generated tokens.")
        self.request_success = counter("request_success", "Finished requests.", ["finished_reason"])
        self.ttft = histogram("time_to_first_token_seconds", "Time from arrival to the first token.", TTFT_BUCKETS)
        self.itl = histogram("inter_token_latency_seconds", "Time between two tokens of a request.", ITL_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "Time from arrival to the last token.", E2E_BUCKETS)
        # -- the pool's own -----------------------------------------------------------
        self.pool_used = gauge("pool_blocks_used", "Blocks held, by the layer type they hold.", ["layer_type"])
        self.pool_free = gauge("pool_blocks_free", "Free blocks (shared by every layer).")
        self.pool_total = gauge("pool_blocks_total", "Blocks in the pool.")
        self.pool_idle_conversations = gauge("pool_idle_conversations",
                                             "Finished conversations kept in blocks for reuse.")
        self.spills = counter("pool_spills", "Idle agents whose blocks were spilled to disk.")
        self.restores = counter("pool_restores", "Spilled agents brought back into blocks.", ["source"])
        self.gather = histogram("pool_gather_seconds", "Time to gather an agent's blocks into a cache.", COPY_BUCKETS)
        self.scatter = histogram("pool_scatter_seconds", "Time to write a turn's K/V back into blocks.",
                                 COPY_BUCKETS)
        for metric in (self.prefix_queries, self.prefix_hits, self.preemptions, self.prompt_tokens,
                       self.generation_tokens, self.spills, self.running, self.waiting, self.kv_usage):
            metric.labels(model_name).inc(0) if isinstance(metric, Counter) else metric.labels(model_name).set(0)

    def _m(self, metric: Gauge | Counter | Histogram, **labels: str) -> Any:  # the labelled child
        return metric.labels(model_name=self.model_name, **labels)

    # -- from the engine thread ---------------------------------------------------------

    def on_started(self, prompt_tokens: int) -> None:
        self._m(self.prompt_tokens).inc(prompt_tokens)
        self._m(self.prefix_queries).inc(prompt_tokens)

    def on_cached(self, cached_tokens: int) -> None:
        """Prompt tokens a finished request took from blocks (a continued context or a prefix hit)."""
        self._m(self.prefix_hits).inc(cached_tokens)

    def on_tokens(self, num_tokens: int, *, ttft_s: float | None, itl_s: float | None) -> None:
        self._m(self.generation_tokens).inc(num_tokens)
        if ttft_s is not None:
            self._m(self.ttft).observe(ttft_s)
        if itl_s is not None:
            self._m(self.itl).observe(itl_s)

    def on_finished(self, finish_reason: str, e2e_s: float) -> None:
        self._m(self.request_success, finished_reason=finish_reason).inc()
        self._m(self.e2e).observe(e2e_s)

    def on_engine(self, *, running: int, waiting: int, used_blocks: int, total_blocks: int) -> None:
        self._m(self.running).set(running)
        self._m(self.waiting).set(waiting)
        self._m(self.kv_usage).set(used_blocks / total_blocks if total_blocks else 0.0)

    def on_pool(self, *, used_by_type: dict[str, int], free_blocks: int, total_blocks: int, idle: int) -> None:
        for layer_type, used in used_by_type.items():
            self._m(self.pool_used, layer_type=layer_type).set(used)
        self._m(self.pool_free).set(free_blocks)
        self._m(self.pool_total).set(total_blocks)
        self._m(self.pool_idle_conversations).set(idle)

    def on_events(self, events: Iterable[Event]) -> None:
        for event in events:
            match event:
                case Gather():
                    self._m(self.gather).observe(event.ms / 1000)
                case Scatter():
                    self._m(self.scatter).observe(event.ms / 1000)
                case Eviction():
                    self._m(self.spills).inc()
                case Preemption():
                    self._m(self.preemptions).inc()
                case Restore():
                    self._m(self.restores, source=event.source).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
