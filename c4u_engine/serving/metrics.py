"""Prometheus metrics of one server process (prometheus_client, a registry per app): requests and errors by type,
latency histograms, requests in flight, and the engine's own counters read at scrape time (queue depth, live
requests, rows per model call, encoder and prefix cache hit rates)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from c4u_engine.engine.stats import ROW_BUCKETS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class EngineCollector:
    """The engine's load statistics as metric families, collected on each scrape."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def collect(self):
        s = self.engine.load_stats()
        yield GaugeMetricFamily("c4u_queue_depth", "Requests waiting for admission", value=s["queue_depth"])
        yield GaugeMetricFamily("c4u_active_requests", "Requests the scheduler works on", value=s["active_requests"])
        yield CounterMetricFamily("c4u_scheduler_steps", "Scheduler steps", value=s["steps"])
        buckets, acc = [], 0
        for bound, count in zip((*map(str, ROW_BUCKETS), "+Inf"), s["model_call_rows_histogram"]):
            acc += count
            buckets.append((bound, acc))
        yield HistogramMetricFamily("c4u_batch_rows", "Rows per batched model call", buckets=buckets,
                                    sum_value=s["model_call_rows"])
        for cache in ("encoder", "prefix"):
            hits, misses = s[f"{cache}_cache_hits"], s[f"{cache}_cache_misses"]
            yield CounterMetricFamily(f"c4u_{cache}_cache_hits", f"{cache} cache hits", value=hits)
            yield CounterMetricFamily(f"c4u_{cache}_cache_misses", f"{cache} cache misses", value=misses)
            yield GaugeMetricFamily(f"c4u_{cache}_cache_hit_rate", f"{cache} cache hits / lookups",
                                    value=hits / (hits + misses) if hits + misses else 0.0)
        yield GaugeMetricFamily("c4u_prefix_cache_bytes", "KV store bytes", value=s["prefix_cache_bytes"])


class ServerMetrics:
    def __init__(self, engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("c4u_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=self.registry)
        self.errors = Counter("c4u_errors", "Error responses by error type", ["type"], registry=self.registry)
        self.latency = Histogram("c4u_request_latency_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("c4u_in_flight_requests", "HTTP requests being served", registry=self.registry)
        self.registry.register(EngineCollector(engine))

    def observe(self, endpoint: str, status: int, seconds: float, error_type: str | None) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if error_type:
            self.errors.labels(error_type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
