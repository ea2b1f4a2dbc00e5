"""Broker outage under load: 200 only when in Kafka, 503 otherwise, recovery without restart.

The broker process (Apache Kafka) is really killed (SIGKILL) under load, and started
again on its data. Every request is counted, errors included; every id answered 200,
before, during or after the outage, must be in Kafka afterwards (no window is left
out); answers during the outage are prompt 503s; and the same gateway process
answers 200 again once the broker is back.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from gateway.app import create_app
from gateway.samples import sample_body
from gateway.sources import verify_context
from gateway.topics import ensure_topics, implied_topics, names
from gateway.verify import sign_request
from tests.conftest import OwnBroker
from tests.support import gateway_toml, read_topic, serve, settings_from_toml

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.real_kafka]
DEADLINE_S = 1.0
MARGIN_S = 1.5  # HTTP and scheduling on a busy 2-core machine


@dataclass
class Load:
    """Signed requests from a few threads; every answer is recorded with its latency."""

    url: str
    sign: Callable[[bytes], dict[str, str]]
    answers: list[tuple[float, int, str, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    pause: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    busy: int = 0  # requests sent and not yet answered

    def worker(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                if self.pause.is_set():
                    time.sleep(0.005)
                    continue
                body = sample_body("fintoc", now=time.time())
                started = time.monotonic()
                with self.lock:
                    self.busy += 1
                try:
                    response = client.post(
                        f"{self.url}/webhooks/fintoc", content=body, headers=self.sign(body)
                    )
                except httpx.HTTPError as exc:
                    with self.lock:  # counted: a transport error is an answer too
                        self.answers.append((started, 0, type(exc).__name__, 0.0))
                    continue
                finally:
                    with self.lock:
                        self.busy -= 1
                elapsed = time.monotonic() - started
                event_id = response.json().get("event_id", "")
                with self.lock:
                    self.answers.append((started, response.status_code, event_id, elapsed))
                time.sleep(0.01)

    def quiesce(self) -> None:
        """Hold new requests and wait until every sent one is answered."""
        self.pause.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.lock:
                if self.busy == 0:
                    return
            time.sleep(0.005)
        raise AssertionError("requests still unanswered after 10 s")

    def snapshot(self) -> list[tuple[float, int, str, float]]:
        with self.lock:
            return list(self.answers)


def test_broker_killed_under_load(
    fresh_broker: OwnBroker, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("outage")
    settings = settings_from_toml(
        gateway_toml(fresh_broker.bootstrap, prefix).replace(
            "deadline_s = 1.0", f"deadline_s = {DEADLINE_S}"
        )
    )
    ensure_topics(settings.admin_config(), implied_topics(settings))
    topic = names(settings).raw("fintoc")
    source = settings.sources["fintoc"]

    def sign(body: bytes) -> dict[str, str]:
        return {
            "content-type": "application/json",
            **sign_request(source.scheme, verify_context(settings, source.name), body, time.time()),
        }

    with serve(create_app(settings)) as url:
        load = Load(url, sign)
        threads = [threading.Thread(target=load.worker, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            while sum(1 for a in load.snapshot() if a[1] == 200) < 50:
                time.sleep(0.05)
            killed_at = time.monotonic()
            fresh_broker.kill()
            time.sleep(4)
            # An answer within 0.2 s of the kill may carry an ack that arrived before it.
            during = [a for a in load.snapshot() if a[0] > killed_at + 0.2]
            assert during, "no request was answered while the broker was down"
            assert {a[1] for a in during} == {503}, {a[1] for a in during}
            assert max(a[3] for a in during) < DEADLINE_S + MARGIN_S

            fresh_broker.restart()
            restarted_at = time.monotonic()
            while not any(a[1] == 200 and a[0] > restarted_at for a in load.snapshot()):
                assert time.monotonic() - restarted_at < 60, "no 200 after the broker came back"
                time.sleep(0.2)
            time.sleep(1)
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(timeout=15)
        answers = load.snapshot()
        statuses = Counter(a[1] for a in answers)
        assert set(statuses) <= {200, 503}, statuses  # no transport error, no other code
        acked = {a[2] for a in answers if a[1] == 200}
        stored = Counter(
            m.key().decode() for m in read_topic(fresh_broker.bootstrap, topic, idle_s=2)
        )
        missing = acked - set(stored)
        assert not missing, f"{len(missing)} ids answered 200 are not in Kafka"
        metrics = httpx.get(f"{url}/metrics").text
        rebuilds = [
            ln
            for ln in metrics.splitlines()
            if ln.startswith("webhook_bridge_gateway_producer_rebuilds_total")
        ]
        print(
            f"outage: {len(answers)} requests: {statuses[200]} x 200, {statuses[503]} x 503 "
            f"({len(during)} during the outage); {len(acked)} acknowledged ids all in Kafka; "
            f"{rebuilds}"
        )
