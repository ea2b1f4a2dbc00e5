"""Gateway metrics: every promised series from the first scrape with real label values,
nothing meaningless for unknown paths, buckets at the alert thresholds, and selector
fallbacks per source and field."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from deploy.samples import sample_body
from gateway.app import create_app
from gateway.metrics import (
    LATENCY_BUCKETS,
    NEAR_DEADLINE,
    PUBLISH_OUTCOMES,
    UNKNOWN_SOURCE,
    latency_buckets,
)
from gateway.normalize import FIELDS
from gateway.publisher import Publisher
from gateway.sources import verify_context
from gateway.verify import justwallet, sign_request
from schemas.config import load
from schemas.serde import EnvelopeDeserializer
from tests.deploy_support import COMPOSE_CONFIG, DEMO_CONFIG, K8S_CONFIG, alert_rules, dummy_env
from tests.support import gateway_toml, settings_from_toml

FALLBACKS = "webhook_bridge_gateway_selector_fallbacks_total"


class AckingPublisher(Publisher):
    """Acknowledges every publish at once and keeps it: the gateway without a broker."""

    def __init__(self) -> None:
        super().__init__({"bootstrap.servers": "127.0.0.1:9"})
        self.sent: list[tuple[str, bytes, bytes]] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.last_ok = time.monotonic()
        self.broker_reachable = True

    def close(self, timeout_s: float = 10.0) -> int:
        return 0

    def check_broker(self, timeout_s: float = 2.0, topics: Sequence[str] | None = None) -> bool:
        return True

    def submit(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        deadline_s: float,
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def fallbacks(client: TestClient) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == FALLBACKS:
                found[(sample.labels["source"], sample.labels["field"])] = sample.value
    return found


def test_selector_fallbacks_are_counted_per_source_and_field() -> None:
    settings = settings_from_toml(gateway_toml("127.0.0.1:9", "t"))
    publisher = AckingPublisher()
    app = create_app(settings, publisher=publisher, registry=CollectorRegistry())
    source = settings.sources["justwallet"]
    with TestClient(app) as client:
        first = fallbacks(client)
        # Every configured source x field exists at 0 from the first scrape; nothing else
        # (an unknown path is never normalised).
        expected = {(s, f) for s in settings.sources for f in FIELDS}
        assert set(first) == expected
        assert set(first.values()) == {0.0}

        keys: list[str] = []
        for _ in range(2):  # Just Wallet's quote_creation.failed has no data.id
            body = sample_body("justwallet", event_type="quote_creation.failed", now=time.time())
            headers = sign_request(
                "justwallet", verify_context(settings, source.name), body, time.time()
            )
            answer = client.post("/webhooks/justwallet", content=body, headers=headers)
            assert answer.status_code == 200, answer.text
            keys.append(answer.json()["event_id"])
            time.sleep(0.001)  # another microsecond, another body

        after = fallbacks(client)
    assert after[("justwallet", "ordering_key")] == 2.0
    assert {k: v for k, v in after.items() if v} == {("justwallet", "ordering_key"): 2.0}
    envelopes: list[Any] = [EnvelopeDeserializer()(value) for _, _, value in publisher.sent]
    # Each in its own lane: the ordering key is the event id, not "justwallet".
    assert [e.ordering_key for e in envelopes] == [e.event_id for e in envelopes] == keys
    assert len(set(keys)) == 2


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(client: TestClient) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


JPM_SOURCE = """
[sources.jpm]
scheme = "jpmorgan"
[sources.jpm.verify]
methods = ["static-headers"]
static_headers = { "X-Custom-Key" = "JPMORGAN_WEBHOOK_SECRET" }
"""


def test_every_series_exists_from_the_first_scrape_with_real_label_values() -> None:
    settings = settings_from_toml(gateway_toml("127.0.0.1:9", "t", JPM_SOURCE))
    app = create_app(settings, publisher=AckingPublisher(), registry=CollectorRegistry())
    g = "webhook_bridge_gateway"
    with TestClient(app) as client:
        first = scrape(client)
        verified = {
            (labels["source"], labels["scheme"], labels["key_id"], labels["mode"])
            for labels, _ in first[f"{g}_verified_total"]
        }
        assert verified == {
            ("jiko", "jiko", "JIKO_WEBHOOK_SECRET", "default"),
            ("fintoc", "fintoc", "FINTOC_WEBHOOK_SECRET", "default"),
            *(
                ("justwallet", "justwallet", "JUSTWALLET_WEBHOOK_SECRET", mode)
                for mode in justwallet.MODE_NAMES
            ),
            ("jpm", "jpmorgan", "", "static-headers"),  # a static header names no key
        }
        publish = {
            (labels["source"], labels["outcome"])
            for labels, _ in first[f"{g}_publish_duration_seconds_count"]
        }
        assert publish == {(s, o) for s in settings.sources for o in PUBLISH_OUTCOMES}
        assert first["webhook_bridge_broker_reachable"] == [({"process": "gateway"}, 1.0)]
        assert first[f"{g}_missing_topics"] == [({}, 0.0)]
        assert first[f"{g}_producer_rebuilds_total"] == [({}, 0.0)]

        # An unknown path has its 404 count only: no failure, deadline, latency or publish.
        unknown = {
            name
            for name, samples in first.items()
            for labels, _ in samples
            if labels.get("source") == UNKNOWN_SOURCE and not name.endswith("_created")
        }
        assert unknown == {f"{g}_requests_total"}
        [(labels, count)] = [
            (labels, v)
            for labels, v in first[f"{g}_requests_total"]
            if labels["source"] == UNKNOWN_SOURCE
        ]
        assert (labels["outcome"], count) == ("not_found", 0.0)
        assert client.post("/webhooks/nope", content=b"{}").status_code == 404
        after = scrape(client)
        assert ({"source": UNKNOWN_SOURCE, "outcome": "not_found"}, 1.0) in after[
            f"{g}_requests_total"
        ]
        assert (
            after[f"{g}_request_duration_seconds_count"]
            == first[f"{g}_request_duration_seconds_count"]
        )


def test_latency_buckets_resolve_the_alert_thresholds() -> None:
    """WebhookBridgePublishLatencyNearDeadline compares p99 with NEAR_DEADLINE x deadline:
    that value and the deadline itself are bucket bounds for every configured deadline."""
    [rule] = [r for r in alert_rules() if r["alert"] == "WebhookBridgePublishLatencyNearDeadline"]
    factor = re.search(
        r"([0-9.]+)\s*\*\s*max by \(source\) \(webhook_bridge_gateway_deadline_seconds\)",
        rule["expr"],
    )
    assert factor is not None, rule["expr"]
    assert float(factor.group(1)) == NEAR_DEADLINE
    for config in (DEMO_CONFIG, COMPOSE_CONFIG, K8S_CONFIG):
        settings = load(config, env=dummy_env(config))
        deadlines = [s.deadline_s for s in settings.sources.values()] + [1.0, 3.0]
        buckets = latency_buckets(deadlines)
        for deadline in deadlines:
            assert deadline in buckets and round(NEAR_DEADLINE * deadline, 6) in buckets, deadline
        assert set(LATENCY_BUCKETS) <= set(buckets)
