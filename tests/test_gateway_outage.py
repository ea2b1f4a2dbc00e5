"""Broker outage under load: 200 only when in Kafka, 503 otherwise, recovery without restart.

The broker process is really killed (SIGKILL). The embedded broker keeps nothing
across a restart, so what is asserted after it is what the clients see: prompt
503s during the outage, and 200s again once a new broker runs on the same port,
with the same gateway process (its producer is rebuilt when it hit a fatal error).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from gateway.app import create_app
from gateway.broker import EmbeddedBroker
from gateway.samples import sample_body
from gateway.topics import ensure_topics, implied_topics, names
from gateway.verify import sign_request
from tests.support import gateway_toml, read_topic, serve, settings_from_toml

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
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
                except httpx.HTTPError:
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
    fresh_broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("outage")
    settings = settings_from_toml(
        gateway_toml(fresh_broker.bootstrap, prefix).replace(
            "deadline_s = 1.0", f"deadline_s = {DEADLINE_S}"
        )
    )
    specs = implied_topics(settings)
    ensure_topics(settings.admin_config(), specs)
    topic = names(settings).raw("fintoc")
    source = settings.sources["fintoc"]

    def sign(body: bytes) -> dict[str, str]:
        return {
            "content-type": "application/json",
            **sign_request(source.scheme, source.verify_context, body, time.time()),
        }

    with serve(create_app(settings)) as url:
        load = Load(url, sign)
        threads = [threading.Thread(target=load.worker, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            while sum(1 for a in load.snapshot() if a[1] == 200) < 50:
                time.sleep(0.05)
            # Every id acknowledged so far must be in Kafka: read it before the kill. The
            # load is held while reading, so no 200 escapes the check; then it resumes and
            # the broker dies under it (only the 200s of those last 0.3 s go unread: the
            # embedded broker keeps nothing to read them from afterwards).
            load.quiesce()
            acked_before = {a[2] for a in load.snapshot() if a[1] == 200}
            stored = {
                m.key().decode()
                for m in read_topic(
                    fresh_broker.bootstrap, topic, expect=len(acked_before), idle_s=1
                )
            }
            assert acked_before <= stored
            load.pause.clear()
            time.sleep(0.3)

            killed_at = time.monotonic()
            fresh_broker.stop()  # SIGKILL
            time.sleep(4)
            during = [a for a in load.snapshot() if a[0] > killed_at + 0.2]
            assert during, "no request was answered while the broker was down"
            assert {a[1] for a in during} <= {503}
            assert max(a[3] for a in during) < DEADLINE_S + MARGIN_S

            # A new, empty broker on the same port: the same gateway recovers.
            replacement = EmbeddedBroker(port=fresh_broker.port)
            replacement.start()
            try:
                ensure_topics(settings.admin_config(), specs)
                restarted_at = time.monotonic()
                recovered = False
                while time.monotonic() - restarted_at < 60:
                    if any(a[1] == 200 and a[0] > restarted_at for a in load.snapshot()):
                        recovered = True
                        break
                    time.sleep(0.2)
                assert recovered, "the gateway did not recover after the broker came back"
                load.stop.set()
                for thread in threads:
                    thread.join(timeout=15)
                statuses = {a[1] for a in load.snapshot()}
                assert statuses <= {200, 503}, statuses
                acked_after = {
                    a[2] for a in load.snapshot() if a[1] == 200 and a[0] > restarted_at + 0.5
                }
                stored_after = {
                    m.key().decode() for m in read_topic(replacement.bootstrap, topic, idle_s=2)
                }
                assert acked_after <= stored_after
                metrics = httpx.get(f"{url}/metrics").text
                print(
                    "outage:",
                    len(during),
                    "answers during the outage, all 503;",
                    "rebuilds:",
                    [
                        ln
                        for ln in metrics.splitlines()
                        if ln.startswith("webhook_bridge_gateway_producer_rebuilds")
                    ],
                )
            finally:
                replacement.stop()
        finally:
            load.stop.set()
