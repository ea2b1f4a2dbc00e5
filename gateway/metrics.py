"""Gateway metrics. Label values come only from the configuration and fixed enums.

An unknown source path is counted under ``source="_unknown"``: a caller can never
create a new label value. Only what can happen to an unknown path has a series for it
(the 404 count): no deadline, no latency. Children for every configured source are
created at start, the verified series included (every secret and mode the source's
verifier can report), so every series exists from the first scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.normalize import FIELDS
from gateway.publisher import REASONS as PUBLISH_REASONS
from gateway.verify.base import REASONS, Verifier
from schemas.metrics_fast import Observer as Observer  # noqa: PLC0414 - re-exported
from schemas.metrics_fast import adder as adder  # noqa: PLC0414 - re-exported

if TYPE_CHECKING:
    from schemas.config import SourceSettings

UNKNOWN_SOURCE = "_unknown"
OUTCOMES = (
    "accepted",
    "quarantined",
    "unauthorized",
    "too_large",
    "too_slow",
    "unavailable",
    "not_found",
    "method_not_allowed",
    "internal_error",
)
DELIVERY_ERRORS = PUBLISH_REASONS
PUBLISH_OUTCOMES = ("acknowledged", *DELIVERY_ERRORS)
NO_MODE = "default"  # the `mode` of a scheme with one way to sign
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0)
# WebhookBridgePublishLatencyNearDeadline compares publish p99 with this share of each
# source's deadline: both it and the deadline are bucket bounds, so the quantile is exact there.
NEAR_DEADLINE = 0.8


def latency_buckets(deadlines: Iterable[float]) -> tuple[float, ...]:
    """LATENCY_BUCKETS plus each deadline and NEAR_DEADLINE of it."""
    extra = {round(f * d, 6) for d in deadlines if d > 0 for f in (1.0, NEAR_DEADLINE)}
    return tuple(sorted({*LATENCY_BUCKETS, *extra}))


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess mode


def multiprocess_dir() -> str | None:
    """The folder the workers of `webhook-bridge gateway --workers N` share their metrics
    in (set by the parent before it starts them), or None for one process."""
    return os.environ.get(MULTIPROC_ENV) or None


def multiprocess_registry() -> CollectorRegistry:
    """Every worker's series, added up as each metric's `multiprocess_mode` says."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def verified_labels(source: SourceSettings, verifier: Verifier) -> list[tuple[str, str, str]]:
    """Every (scheme, key_id, mode) the source's verifier can report: its secrets' names
    (for J.P. Morgan the pinned key ids of the method that reports one), and its modes."""
    from gateway.verify.jpmorgan import JPMorganVerifier

    key_ids: set[str] = set(source.key_ids)
    modes: set[str] = {NO_MODE}
    if isinstance(verifier, JPMorganVerifier):
        modes = {verifier.mode}
        if verifier.signature is not None:
            key_ids = {p.key_id for p in verifier.signature.pinned.values()}
        elif verifier.bearer is not None:
            key_ids = {k.kid for k in verifier.bearer.all if k.kid}
        else:
            key_ids = set()
    elif hasattr(verifier, "mode_names"):
        modes = set(verifier.mode_names)
    return [(verifier.scheme, k, m) for k in sorted(key_ids or {""}) for m in sorted(modes)]


SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


@dataclass
class SourceMetrics:
    """Pre-bound children for one source: the hot path does no label lookups. The
    ``count_*``/``observe_*`` fields are the same children's fast entry points."""

    outcomes: dict[str, Counter]
    failures: dict[str, Counter]
    publish: dict[str, Histogram]  # by outcome: acknowledged or a delivery error
    request: Histogram
    body_size: Histogram
    delivery_errors: dict[str, Counter]
    fallbacks: dict[str, Counter]
    count_outcome: dict[str, Callable[[float], None]] = field(init=False)
    observe_publish: dict[str, Callable[[float], None]] = field(init=False)
    observe_request: Callable[[float], None] = field(init=False)
    observe_body_size: Callable[[float], None] = field(init=False)
    count_fallback: Callable[[str], None] = field(init=False)  # by field of FIELDS

    def __post_init__(self) -> None:
        # Only the event loop's thread serves requests: no lock (schemas/metrics_fast.py).
        self.count_outcome = {o: adder(c, loop_only=True) for o, c in self.outcomes.items()}
        self.observe_publish = {
            o: Observer(h, loop_only=True).observe for o, h in self.publish.items()
        }
        self.observe_request = Observer(self.request, loop_only=True).observe
        self.observe_body_size = Observer(self.body_size, loop_only=True).observe
        self.count_fallback = lambda field: self.fallbacks[field].inc()


class GatewayMetrics:
    def __init__(
        self,
        sources: Iterable[tuple[str, float]],
        registry: CollectorRegistry,
        verified: Iterable[tuple[str, str, str, str]] = (),
    ) -> None:
        sources = list(sources)
        buckets = latency_buckets(deadline for _, deadline in sources)
        ns = "webhook_bridge_gateway"
        self.requests = Counter(
            f"{ns}_requests",
            "Webhook requests by source and outcome",
            ["source", "outcome"],
            registry=registry,
        )
        self.failures = Counter(
            f"{ns}_verification_failures",
            "Requests that failed verification, by reason",
            ["source", "reason"],
            registry=registry,
        )
        self.verified = Counter(
            f"{ns}_verified",
            "Verified requests by the secret/key and mode that matched",
            ["source", "scheme", "key_id", "mode"],
            registry=registry,
        )
        self.publish = Histogram(
            f"{ns}_publish_duration_seconds",
            "From produce to the broker's acknowledgement or the failure (outcome: "
            "acknowledged or the delivery error's reason; a timeout counts its deadline)",
            ["source", "outcome"],
            buckets=buckets,
            registry=registry,
        )
        self.request = Histogram(
            f"{ns}_request_duration_seconds",
            "Whole webhook request, first byte to answer",
            ["source"],
            buckets=buckets,
            registry=registry,
        )
        # multiprocess_mode: how `webhook-bridge gateway --workers N` adds up its workers
        self.deadline = Gauge(
            f"{ns}_deadline_seconds",
            "Configured publish deadline",
            ["source"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.in_flight = Gauge(
            f"{ns}_in_flight_requests",
            "Webhook requests being handled",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.queue = Gauge(
            f"{ns}_producer_queue_messages",
            "Messages waiting in the producer for an acknowledgement",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.delivery_errors = Counter(
            f"{ns}_delivery_errors",
            "Publishes that got no acknowledgement, by reason",
            ["source", "reason"],
            registry=registry,
        )
        self.rebuilds = Counter(
            f"{ns}_producer_rebuilds",
            "Producers rebuilt after a fatal producer error (never for a broker that is away)",
            registry=registry,
        )
        self.missing_topics = Gauge(
            f"{ns}_missing_topics",
            "Topics the gateway writes that the broker does not have (publishes to them "
            "answer 503); topics are never auto-created",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.body_size = Histogram(
            f"{ns}_body_size_bytes",
            "Request body sizes",
            ["source"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.fallbacks = Counter(
            f"{ns}_selector_fallbacks",
            "Events whose selector for a field found no usable value, so the field fell "
            "back (id: body hash, type: quarantined, occurred_at: time received, "
            "ordering_key: event id)",
            ["source", "field"],
            registry=registry,
        )
        self.by_source: dict[str, SourceMetrics] = {}
        # An unknown path is answered 404 before anything else happens to it.
        self.unknown = self.requests.labels(UNKNOWN_SOURCE, "not_found")
        for labels in verified:
            self.verified.labels(*labels)
        for name, deadline in sources:
            self.deadline.labels(name).set(deadline)
            self.by_source[name] = SourceMetrics(
                outcomes={o: self.requests.labels(name, o) for o in OUTCOMES},
                failures={r: self.failures.labels(name, r) for r in REASONS},
                publish={o: self.publish.labels(name, o) for o in PUBLISH_OUTCOMES},
                request=self.request.labels(name),
                body_size=self.body_size.labels(name),
                delivery_errors={r: self.delivery_errors.labels(name, r) for r in DELIVERY_ERRORS},
                fallbacks={f: self.fallbacks.labels(name, f) for f in FIELDS},
            )
        self.rebuilds.inc(0)
