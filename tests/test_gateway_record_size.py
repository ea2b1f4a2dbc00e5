"""Bodies near the size limit, end to end: real uvicorn, real Kafka.

A body the gateway accepts as small enough must fit every Kafka limit on its way
(schemas/sizes.py); a record the broker refuses as too large anyway (a topic lowered
behind the bridge's back) is answered 413 alone: no other request fails with it, and
the producer is never rebuilt for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from deploy.topics import ensure_topics
from gateway.app import create_app
from gateway.sources import verify_context
from gateway.verify import sign_request
from schemas.config import Settings
from schemas.serde import EnvelopeDeserializer
from schemas.topics import implied_topics, names
from tests.conftest import KafkaCluster
from tests.support import read_topic, serve, settings_from_toml
from tests.test_gateway_e2e import padded_body

pytestmark = pytest.mark.kafka


def config(bootstrap: str, prefix: str) -> str:
    # body_limit: the default, 1 MiB, more than librdkafka's default message.max.bytes
    return f"""
[bridge]
topic_prefix = "{prefix}"
[kafka]
"bootstrap.servers" = "{bootstrap}"
[topics]
partitions = 2
[sources.jiko]
scheme = "jiko"
secrets = ["JIKO_WEBHOOK_SECRET"]
"""


@dataclass
class Running:
    url: str
    settings: Settings
    bootstrap: str

    def post(self, client: httpx.Client, body: bytes) -> httpx.Response:
        source = self.settings.sources["jiko"]
        headers = sign_request(
            source.scheme, verify_context(self.settings, source.name), body, time.time()
        )
        return client.post(
            f"{self.url}/webhooks/jiko",
            content=body,
            headers={"content-type": "application/json", **headers},
            timeout=30,
        )

    def metric(self, line_start: str) -> float:
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric {line_start}")

    def stored(self, marker: str) -> list[bytes]:
        topic = names(self.settings).raw("jiko")
        return [
            EnvelopeDeserializer()(m.value()).body
            for m in read_topic(self.bootstrap, topic, idle_s=3)
            if marker.encode() in (m.value() or b"")
        ]


@pytest.fixture
def running(kafka: KafkaCluster) -> Iterator[Running]:
    settings = settings_from_toml(config(kafka.bootstrap, f"size-{time.time_ns()}"))
    ensure_topics(settings.admin_config(), implied_topics(settings))
    with serve(create_app(settings), settings) as url:
        yield Running(url, settings, kafka.bootstrap)


def test_bodies_up_to_the_default_body_limit_are_stored(running: Running) -> None:
    """1,000,000 bytes (the outside tester's body) and exactly 1 MiB both fit Kafka."""
    limit = running.settings.sources["jiko"].body_limit
    assert limit == 1_048_576
    marker = f"big-{time.time_ns()}"
    bodies = [padded_body("jiko", size, marker) for size in (1_000_000, limit)]
    with httpx.Client() as client:
        answers = [running.post(client, body) for body in bodies]
        over = running.post(client, padded_body("jiko", limit + 1, marker))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert over.status_code == 413
    assert sorted(running.stored(marker), key=len) == bodies
    assert running.metric("webhook_bridge_gateway_producer_rebuilds_total") == 0


def test_a_record_the_topic_refuses_fails_alone_and_rebuilds_nothing(running: Running) -> None:
    """The raw topic's max.message.bytes lowered to 200 kB behind the bridge's back: 300 kB
    bodies sent every 0.2 s get 413, while 4 clients' valid requests all get 200."""
    topic = names(running.settings).raw("jiko")
    admin = AdminClient({"bootstrap.servers": running.bootstrap})
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "200000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    time.sleep(1)  # the new limit reaches the partition leaders

    marker = f"collateral-{time.time_ns()}"
    stop = threading.Event()
    valid: list[int] = []
    oversized: list[int] = []
    lock = threading.Lock()

    def send_valid(worker: int) -> None:
        with httpx.Client() as client:
            n = 0
            while not stop.is_set():
                body = padded_body("jiko", 600, f"{marker}-ok-{worker}-{n}")
                status = running.post(client, body).status_code
                with lock:
                    valid.append(status)
                n += 1

    def send_oversized() -> None:
        with httpx.Client() as client:
            for n in range(15):
                body = padded_body("jiko", 300_000, f"{marker}-big-{n}")
                status = running.post(client, body).status_code
                with lock:
                    oversized.append(status)
                time.sleep(0.2)

    workers = [threading.Thread(target=send_valid, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    send_oversized()
    stop.set()
    for worker in workers:
        worker.join(timeout=60)

    assert oversized == [413] * 15
    assert len(valid) > 100
    assert [s for s in valid if s != 200] == []  # zero failed valid requests
    stored = running.stored(marker)
    assert len(stored) == len(valid)  # every valid one is in Kafka, no oversized one
    assert all(b"-ok-" in body for body in stored)
    assert running.metric("webhook_bridge_gateway_producer_rebuilds_total") == 0
    assert (
        running.metric(
            'webhook_bridge_gateway_delivery_errors_total{reason="too_large",source="jiko"}'
        )
        == 15
    )
    assert (
        running.metric('webhook_bridge_gateway_requests_total{outcome="too_large",source="jiko"}')
        == 15
    )


def test_a_message_the_client_refuses_fails_alone_and_rebuilds_nothing(
    kafka: KafkaCluster,
) -> None:
    """The config refuses a message.max.bytes below the largest envelope (test_config);
    should the client refuse a message anyway, only its request fails, as too_large."""
    import asyncio

    from gateway.publisher import Publisher, PublishError

    settings = settings_from_toml(config(kafka.bootstrap, f"client-{time.time_ns()}"))
    ensure_topics(settings.admin_config(), implied_topics(settings))
    topic = names(settings).raw("jiko")
    publisher = Publisher({**settings.producer_config(), "message.max.bytes": "100000"})

    async def scenario() -> list[str]:
        publisher.start(asyncio.get_running_loop())
        outcomes: list[str] = []

        async def publish(size: int) -> None:
            try:
                await publisher.publish(topic, b"k", b"v" * size, [], 10.0)
                outcomes.append(f"ok {size}")
            except PublishError as exc:
                outcomes.append(f"{exc.reason} {size}")

        # in one burst: the refused message shares the producer's outbox with valid ones
        await asyncio.gather(publish(100), publish(200_000), publish(300))
        publisher.close(5.0)
        return outcomes

    assert sorted(asyncio.run(scenario())) == ["ok 100", "ok 300", "too_large 200000"]
    assert publisher.rebuilds == 0
