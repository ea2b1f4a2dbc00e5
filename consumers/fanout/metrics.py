"""Fan-out metrics. Label values come from the config (sink) or a fixed set (reason)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

DLQ_REASONS = ("rejected", "budget_exhausted", "undecodable")
# An attempt up to the http sink's timeouts; the event age finely around the 300 s the
# WebhookBridgeFanoutEventAgeHigh alert compares p99 with (tests/test_metrics.py checks
# every histogram_quantile threshold of the alerts is a bucket bound with a close neighbour).
_DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60,
)  # fmt: skip
_AGE_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 45, 60, 75, 90, 120, 150, 180, 210, 240,
    270, 300, 330, 360, 450, 600, 900, 1800, 3600, 21600, 86400,
)  # fmt: skip


class FanoutMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.delivered = Counter(
            "webhook_bridge_fanout_delivered_total",
            "Events delivered to a sink",
            ("sink", "provider"),
            registry=registry,
        )
        self.retries = Counter(
            "webhook_bridge_fanout_retries_total",
            "Delivery attempts that will be retried",
            ("sink",),
            registry=registry,
        )
        self.dead_lettered = Counter(
            "webhook_bridge_fanout_dead_lettered_total",
            "Events moved to the sink's DLQ",
            ("sink", "reason"),
            registry=registry,
        )
        self.duration = Histogram(
            "webhook_bridge_fanout_delivery_duration_seconds",
            "One delivery attempt",
            ("sink",),
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.age = Histogram(
            "webhook_bridge_fanout_event_age_seconds",
            "now - received_at at delivery",
            ("sink",),
            buckets=_AGE_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "webhook_bridge_fanout_in_flight",
            "Records read and not yet finished",
            ("sink",),
            registry=registry,
        )
        self.lag = Gauge(
            "webhook_bridge_fanout_consumer_lag_messages",
            "Last stable offset minus the sink group's committed offset over every "
            "partition of its topics, paused or not; queried every 2 s off the delivery "
            "path (indicative only on the embedded broker, whose high watermark is wrong)",
            ("sink",),
            registry=registry,
        )
        self.breaker_open = Gauge(
            "webhook_bridge_fanout_breaker_open",
            "1 while the sink's circuit breaker is open",
            ("sink",),
            registry=registry,
        )

    def init_sinks(self, sinks: Iterable[str], providers: Iterable[str]) -> None:
        """Create every child up front, so dashboards see zeros instead of gaps."""
        providers = tuple(providers)
        for sink in sinks:
            for provider in providers:
                self.delivered.labels(sink, provider)
            self.retries.labels(sink)
            for reason in DLQ_REASONS:
                self.dead_lettered.labels(sink, reason)
            self.duration.labels(sink)
            self.age.labels(sink)
            self.in_flight.labels(sink).set(0)
            self.lag.labels(sink).set(0)
            self.breaker_open.labels(sink).set(0)
