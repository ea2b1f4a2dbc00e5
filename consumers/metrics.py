"""Prometheus metrics of the compactor and reorderer stages.

Labels come from bounded sets only: stage name, provider (from the config, never
from a record), quarantine reason (a fixed table). Every labelled child is
created at start so all series exist from the first scrape.

`webhook_bridge_stage_consumer_lag_messages` is the log end (last stable offset)
minus the group's committed offset, asked of the cluster by `runtime.watch`. On
the embedded broker (Tansu) the high watermark is wrong whenever
the newest batch holds more than one record (see BROKER-NOTES.md), so there the
gauge is indicative only; on Apache Kafka it is exact.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

QUARANTINE_REASONS = ("no_event_id", "undecodable")

# Buckets resolve what is read off them: a transaction up to the client call timeouts
# (30 s by default), lateness around typical reorder windows (1-60 s) and far beyond.
_TXN_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
_LATENESS_BUCKETS = (
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
    300.0, 600.0, 900.0, 1800.0, 3600.0, 21600.0, 86400.0,
)  # fmt: skip
PROCESSES = ("compactor", "reorderer", "fanout")  # the consumer processes' `process` label


class StageMetrics:
    """The metrics every stage has."""

    def __init__(self, stage: str, providers: Iterable[str], registry: CollectorRegistry) -> None:
        self.stage = stage
        self.registry = registry
        self.providers = tuple(providers)
        self.consumed = Counter(
            "webhook_bridge_stage_consumed_total",
            "Records consumed from the stage's input.",
            ("stage", "provider"),
            registry=registry,
        )
        self.forwarded = Counter(
            "webhook_bridge_stage_forwarded_total",
            "Records written to the stage's output.",
            ("stage", "provider"),
            registry=registry,
        )
        self.quarantined = Counter(
            "webhook_bridge_stage_quarantined_total",
            "Records sent to the quarantine topic.",
            ("stage", "reason"),
            registry=registry,
        )
        self.transaction_duration = Histogram(
            "webhook_bridge_stage_transaction_duration_seconds",
            "Begin-to-commit time of one consume-process-produce transaction.",
            ("stage",),
            buckets=_TXN_BUCKETS,
            registry=registry,
        )
        self.commit_duration = Histogram(
            "webhook_bridge_stage_commit_duration_seconds",
            "Commit protocol of one transaction: flush outputs, changelog, offsets, commit.",
            ("stage",),
            buckets=_TXN_BUCKETS,
            registry=registry,
        )
        self.aborted = Counter(
            "webhook_bridge_stage_transactions_aborted_total",
            "Transactions aborted (the input is rewound and reprocessed).",
            ("stage",),
            registry=registry,
        )
        self.rebalances = Counter(
            "webhook_bridge_stage_rebalances_total",
            "Partition assignments received.",
            ("stage",),
            registry=registry,
        )
        self.lag = Gauge(
            "webhook_bridge_stage_consumer_lag_messages",
            "Last stable offset minus the group's committed offset over every input "
            "partition, queried every 2 s off the processing path (indicative only on "
            "the embedded broker, whose high watermark is wrong).",
            ("stage", "provider"),
            registry=registry,
        )
        for provider in self.providers:
            self.consumed.labels(stage, provider)
            self.forwarded.labels(stage, provider)
            self.lag.labels(stage, provider)
        for reason in QUARANTINE_REASONS:
            self.quarantined.labels(stage, reason)
        self.transaction_duration.labels(stage)
        self.commit_duration.labels(stage)
        self.aborted.labels(stage)
        self.rebalances.labels(stage)


class CompactorMetrics:
    def __init__(self, providers: Iterable[str], registry: CollectorRegistry) -> None:
        self.duplicates = Counter(
            "webhook_bridge_compactor_duplicates_dropped_total",
            "Records dropped because their event id was seen within the dedup horizon.",
            ("provider",),
            registry=registry,
        )
        self.remembered = Gauge(
            "webhook_bridge_compactor_remembered_ids",
            "Event ids remembered (local store; an estimate with RocksDB).",
            ("provider",),
            registry=registry,
        )
        for provider in providers:
            self.duplicates.labels(provider)
            self.remembered.labels(provider)


class ReordererMetrics:
    def __init__(self, providers: Iterable[str], registry: CollectorRegistry) -> None:
        self.late = Counter(
            "webhook_bridge_reorderer_late_events_total",
            "Events released at once, marked late (older than the last released one).",
            ("provider",),
            registry=registry,
        )
        self.lateness = Histogram(
            "webhook_bridge_reorderer_lateness_seconds",
            "How far behind the last released occurred_at a late event was.",
            ("provider",),
            buckets=_LATENESS_BUCKETS,
            registry=registry,
        )
        self.buffered = Gauge(
            "webhook_bridge_reorderer_buffered_events",
            "Events held in the reorder buffer.",
            ("provider",),
            registry=registry,
        )
        self.oldest_age = Gauge(
            "webhook_bridge_reorderer_oldest_buffered_age_seconds",
            "Wall-clock age of the longest-held buffered event (0 when empty).",
            ("provider",),
            registry=registry,
        )
        for provider in providers:
            self.late.labels(provider)
            self.lateness.labels(provider)
            self.buffered.labels(provider)
            self.oldest_age.labels(provider)
