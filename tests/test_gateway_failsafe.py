"""The gateway fails closed and keeps its labels bounded when code misbehaves: a plugin
verifier with its own reason or an exception, and a bug after verification."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from deploy.topics import ensure_topics
from gateway.app import create_app
from gateway.verify.base import BuildContext, InboundRequest, VerifiedRequest
from schemas.envelope import Envelope
from schemas.errors import VerificationError
from schemas.serde import EnvelopeSerializer
from schemas.topics import implied_topics, names
from tests.conftest import KafkaCluster
from tests.support import gateway_toml, read_topic, settings_from_toml

pytestmark = pytest.mark.kafka

PLUGIN_SOURCE = """
[sources.odd]
scheme = "tests.test_gateway_failsafe:build"
allow_unverified = true
"""


class MoodyVerifier:
    """Rejects with a reason outside REASONS, raises, or passes, as the header says."""

    scheme = "moody"

    def verify(self, request: InboundRequest, now: float) -> VerifiedRequest:
        mood = request.headers.get("x-mood", "")
        if mood == "own-reason":
            raise VerificationError("signature_from_the_future", "plugin detail")
        if mood == "raise":
            raise ValueError("secret-looking text s3cr3t")
        return VerifiedRequest(request, self.scheme)


def build(ctx: BuildContext) -> MoodyVerifier:
    return MoodyVerifier()


class BrokenSerializer(EnvelopeSerializer):
    """Raises for bodies that ask for it: a stand-in for a bug after verification."""

    def __call__(self, envelope: Envelope, topic: str = "") -> bytes:
        if b"break-me" in envelope.body:
            raise RuntimeError("bug")
        return super().__call__(envelope, topic)


@pytest.fixture(scope="module")
def client(kafka: KafkaCluster) -> Iterator[Gateway]:
    settings = settings_from_toml(
        gateway_toml(kafka.bootstrap, f"failsafe-{time.time_ns()}", PLUGIN_SOURCE)
    )
    ensure_topics(settings.admin_config(), implied_topics(settings))
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry, serializer=BrokenSerializer())
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield Gateway(test_client, registry, names(settings).raw("odd"), kafka.bootstrap)


@dataclass
class Gateway:
    client: TestClient
    registry: CollectorRegistry
    topic: str
    bootstrap: str


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_plugin_reason_outside_the_set_is_401_counted_as_other(
    client: Gateway,
) -> None:
    test_client, registry = client.client, client.registry
    name = "webhook_bridge_gateway_verification_failures_total"
    before = sample(registry, name, source="odd", reason="other")
    response = test_client.post("/webhooks/odd", content=b"{}", headers={"x-mood": "own-reason"})
    assert response.status_code == 401
    assert response.json()["reason"] == "other"
    assert sample(registry, name, source="odd", reason="other") == before + 1
    exposed = test_client.get("/metrics").text
    assert "signature_from_the_future" not in exposed  # no unbounded label value


def test_a_verifier_that_raises_fails_closed_without_echoing_its_message(
    client: Gateway,
) -> None:
    test_client, registry = client.client, client.registry
    name = "webhook_bridge_gateway_verification_failures_total"
    before = sample(registry, name, source="odd", reason="verifier_error")
    marker = f"raised-{time.time_ns()}"
    response = test_client.post(
        "/webhooks/odd", content=f'{{"m": "{marker}"}}'.encode(), headers={"x-mood": "raise"}
    )
    assert response.status_code == 401
    assert response.json()["reason"] == "verifier_error"
    assert "s3cr3t" not in response.text
    assert sample(registry, name, source="odd", reason="verifier_error") == before + 1
    published = read_topic(client.bootstrap, client.topic, idle_s=1)
    assert not [m for m in published if marker.encode() in m.value()]


def test_a_bug_after_verification_is_a_counted_500_and_the_gateway_goes_on(
    client: Gateway,
) -> None:
    test_client, registry = client.client, client.registry
    name = "webhook_bridge_gateway_requests_total"
    before = sample(registry, name, source="odd", outcome="internal_error")
    response = test_client.post("/webhooks/odd", content=b'{"event_type": "x", "b": "break-me"}')
    assert response.status_code == 500
    assert response.json()["error"] == "internal error, retry"
    assert sample(registry, name, source="odd", outcome="internal_error") == before + 1
    ok = test_client.post("/webhooks/odd", content=b'{"event_type": "x", "b": "fine"}')
    assert ok.status_code == 200, ok.text
