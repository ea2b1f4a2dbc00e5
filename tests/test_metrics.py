"""Gateway metrics: selector fallbacks, per source and field, from the first scrape."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.normalize import FIELDS
from gateway.publisher import Publisher
from gateway.samples import sample_body
from gateway.sources import verify_context
from gateway.verify import sign_request
from schemas.serde import EnvelopeDeserializer
from tests.support import gateway_toml, settings_from_toml

FALLBACKS = "webhook_bridge_gateway_selector_fallbacks_total"


class AckingPublisher(Publisher):
    """Acknowledges every publish at once and keeps it: the gateway without a broker."""

    def __init__(self) -> None:
        super().__init__({"bootstrap.servers": "127.0.0.1:9"})
        self.sent: list[tuple[str, bytes, bytes]] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.last_ok = time.monotonic()

    def close(self, timeout_s: float = 10.0) -> int:
        return 0

    def check_broker(self, timeout_s: float = 2.0) -> bool:
        return True

    async def publish(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        deadline_s: float,
    ) -> None:
        self.sent.append((topic, key, value))


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
        # Every configured source x field exists at 0 from the first scrape (and the
        # unknown-source label, like every per-source metric); nothing else.
        expected = {(s, f) for s in [*settings.sources, "_unknown"] for f in FIELDS}
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
