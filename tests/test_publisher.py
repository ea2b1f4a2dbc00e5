"""The publisher says what happened: delivery-error reasons, a missing topic, a broker
that is away (frozen: no connection error at all, only silence) versus one that lost
the producer's state (the embedded broker's restart), against real brokers."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from deploy.samples import sample_body
from deploy.topics import ensure_topics
from gateway.app import create_app
from gateway.publisher import PRODUCER_DEFAULTS, Publisher, delivery_reason
from gateway.sources import verify_context
from gateway.verify import sign_request
from schemas.config import Settings
from schemas.topics import implied_topics, names
from tests.conftest import KafkaCluster, OwnBroker
from tests.support import captured_logs, gateway_toml, serve, settings_from_toml
from tests.test_gateway_outage import readyz, scrape, value

G = "webhook_bridge_gateway"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("UNKNOWN_PRODUCER_ID", "fatal"),
        ("OUT_OF_ORDER_SEQUENCE_NUMBER", "fatal"),
        ("_FATAL", "fatal"),
        ("UNKNOWN_TOPIC_OR_PART", "topic_missing"),
        ("_UNKNOWN_TOPIC", "topic_missing"),
        ("_MSG_TIMED_OUT", "broker"),
        ("_TRANSPORT", "broker"),
        ("NOT_ENOUGH_REPLICAS", "broker"),
        ("TOPIC_AUTHORIZATION_FAILED", "broker"),
    ],
)
def test_delivery_error_reasons(name: str, reason: str) -> None:
    assert delivery_reason(name) == reason


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def timeouts(publisher: Publisher, clock: Clock, seconds: float, every_s: float = 0.5) -> None:
    for _ in range(int(seconds / every_s)):
        clock.now += every_s
        publisher._note_timeout()


def test_only_a_lasting_run_of_timeouts_with_the_broker_answering_rebuilds() -> None:
    """The stuck-producer rule (a broker that lost the producer's state may time it out
    forever): never for a brief slowdown of an idle gateway, nor across an outage."""
    publisher = Publisher({"bootstrap.servers": "127.0.0.1:9"})
    clock = Clock()
    publisher.clock = clock
    publisher.set_reachable(True)
    publisher.last_ok = 0.0  # idle for long: no acknowledgement in the last 10 s either
    timeouts(publisher, clock, 3.0)
    assert not publisher._rebuild_requested, "a 3 s slowdown rebuilt the producer"

    loop = asyncio.new_event_loop()
    try:  # an acknowledgement ends the run
        publisher._reporter(loop.create_future(), set())(None, None)
    finally:
        loop.close()
    clock.now += 60  # quiet again; then 8 s of timeouts, the broker away, 8 s more
    timeouts(publisher, clock, 8.0)
    publisher.set_reachable(False)
    clock.now += 5
    publisher.set_reachable(True)
    timeouts(publisher, clock, 8.0)
    assert not publisher._rebuild_requested, "a run across an outage rebuilt the producer"

    timeouts(publisher, clock, 2.5)  # now 10 s of timeouts while the broker answers
    assert publisher._rebuild_requested


def test_timeouts_with_no_acknowledgement_in_between_are_one_run() -> None:
    """At low traffic a stuck producer fails every request, however far apart."""
    publisher = Publisher({"bootstrap.servers": "127.0.0.1:9"})
    clock = Clock()
    publisher.clock = clock
    publisher.set_reachable(True)
    for _ in range(3):
        clock.now += 6
        publisher._note_timeout()
    assert publisher._rebuild_requested


def _next_poll_after_a_tick(publisher: Publisher, in_flight: int) -> float:
    """The delay a tick, with this many messages in flight, gives the next one; then a
    burst is produced (an empty one), which looks at the tick's handle as it stands."""
    loop = publisher._loop
    assert loop is not None and publisher._timer is not None
    publisher._pending = {loop.create_future() for _ in range(in_flight)}
    publisher._timer.cancel()
    delays: list[float] = []
    schedule = publisher._schedule

    def record(delay: float) -> None:
        delays.append(delay)
        schedule(delay)

    publisher._schedule = record  # type: ignore[method-assign]
    try:
        publisher._tick()
    finally:
        del publisher._schedule  # the class's own again
    publisher._produce_outbox()  # uvloop's call_later(0) handle has no when(): must not ask
    assert len(delays) == 1
    return delays[0]


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
@pytest.mark.parametrize("threshold", [16, 5, 0])
def test_the_poll_tick_runs_on_every_loop_iteration_only_under_load(
    threshold: int, loop_kind: str
) -> None:
    """From `busy_poll_in_flight` messages in flight the next poll is due at once (the
    loop's next iteration), below that a millisecond later, idle every 50 ms; with 0 the
    tick never runs on every iteration. On both loops (the gateway runs on uvloop)."""
    import uvloop

    from gateway.publisher import BUSY_POLL_S, IDLE_POLL_S

    publisher = Publisher({"bootstrap.servers": "127.0.0.1:9"}, busy_poll_in_flight=threshold)
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        publisher.start(loop)  # a producer with nothing queued; no broker is ever reached
        if threshold:
            assert _next_poll_after_a_tick(publisher, threshold) == 0.0
            assert _next_poll_after_a_tick(publisher, threshold + 40) == 0.0
            assert _next_poll_after_a_tick(publisher, threshold - 1) == BUSY_POLL_S
        else:
            assert _next_poll_after_a_tick(publisher, 500) == BUSY_POLL_S
        assert _next_poll_after_a_tick(publisher, 1) == BUSY_POLL_S
        assert _next_poll_after_a_tick(publisher, 0) == IDLE_POLL_S
    finally:
        publisher._pending = set()
        publisher.close(0)
        loop.close()


def test_the_producer_asks_for_no_topic_creation() -> None:
    assert PRODUCER_DEFAULTS["allow.auto.create.topics"] is False


def post(url: str, settings: Settings, name: str) -> httpx.Response:
    source = settings.sources[name]
    body = sample_body(source.scheme, now=time.time())
    headers = sign_request(source.scheme, verify_context(settings, name), body, time.time())
    return httpx.post(f"{url}/webhooks/{name}", content=body, headers=headers, timeout=10)


def first_ok(url: str, settings: Settings, within_s: float = 30) -> None:
    """Post until a 200: a new broker's first produce (leaders, producer id) can take >1 s."""
    deadline = time.monotonic() + within_s
    while post(url, settings, "fintoc").status_code != 200:
        assert time.monotonic() < deadline, f"no 200 within {within_s} s"
        time.sleep(0.2)


def topic_exists(bootstrap: str, topic: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    return topic in admin.list_topics(timeout=10).topics


@pytest.mark.kafka
def test_a_missing_topic_is_a_prompt_503_counted_logged_and_never_created(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    settings = settings_from_toml(gateway_toml(kafka.bootstrap, unique_name("missing")))
    absent = names(settings).raw("fintoc")
    specs = implied_topics(settings)
    ensure_topics(settings.admin_config(), [s for s in specs if s.name != absent])
    with captured_logs(logging.INFO) as logged, serve(create_app(settings), settings) as url:
        assert value(scrape(url), f"{G}_missing_topics") == 1
        started = time.monotonic()
        answer = post(url, settings, "fintoc")
        assert answer.status_code == 503, answer.text
        assert time.monotonic() - started < 0.5  # not after the 1 s deadline: known at once
        assert answer.headers["retry-after"] == "5"
        assert post(url, settings, "jiko").status_code == 202  # other sources go on
        assert readyz(url)[0] == 200  # the broker is there; one topic is not
        samples = scrape(url)
        assert (
            value(samples, f"{G}_delivery_errors_total", source="fintoc", reason="topic_missing")
            == 1
        )
        assert (
            value(
                samples,
                f"{G}_publish_duration_seconds_count",
                source="fintoc",
                outcome="topic_missing",
            )
            == 1
        )
        assert not topic_exists(kafka.bootstrap, absent), "the gateway created the topic"
        lines = logged.fields("topic missing: publishes to it answer 503")
        assert [line["topic"] for line in lines] == [absent]

        ensure_topics(settings.admin_config(), [s for s in specs if s.name == absent])
        deadline = time.monotonic() + 15  # the watch visits each topic within a few seconds
        while post(url, settings, "fintoc").status_code != 200:
            assert time.monotonic() < deadline, "still 503 after the topic was created"
            time.sleep(0.5)
        assert value(scrape(url), f"{G}_missing_topics") == 0


@contextmanager
def frozen(broker: OwnBroker) -> Iterator[None]:
    """SIGSTOP the broker: its connections stay open and silent (as behind a dead link)."""
    assert broker.apache is not None
    pid = broker.apache.pids()[1]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.real_kafka
def test_a_silent_broker_turns_readiness_503_within_5s_without_a_rebuild(
    fresh_broker: OwnBroker, unique_name: Callable[[str], str]
) -> None:
    """No connection error arrives from a frozen broker: only the background probe sees it."""
    settings = settings_from_toml(gateway_toml(fresh_broker.bootstrap, unique_name("frozen")))
    ensure_topics(settings.admin_config(), implied_topics(settings))
    with serve(create_app(settings), settings) as url:
        first_ok(url, settings)
        with frozen(fresh_broker):
            stopped_at = time.monotonic()
            took: list[float] = []
            while True:
                status, seconds = readyz(url)
                took.append(seconds)
                if status == 503:
                    break
                assert time.monotonic() - stopped_at < 5.0, "/readyz still 200 5 s after"
                time.sleep(0.1)
            lost_after = time.monotonic() - stopped_at
            assert max(took) < 0.5, took
            assert value(scrape(url), "webhook_bridge_broker_reachable", process="gateway") == 0
            answers = [post(url, settings, "fintoc").status_code for _ in range(3)]
            assert answers == [503] * 3
        resumed_at = time.monotonic()
        while readyz(url)[0] != 200:
            assert time.monotonic() - resumed_at < 30, "/readyz not 200 after the broker resumed"
            time.sleep(0.2)
        while post(url, settings, "fintoc").status_code != 200:
            assert time.monotonic() - resumed_at < 60, "no 200 after the broker resumed"
            time.sleep(0.2)
        samples = scrape(url)
    assert value(samples, f"{G}_producer_rebuilds_total") == 0
    assert value(samples, f"{G}_delivery_errors_total", source="fintoc", reason="broker") >= 3
    assert value(samples, f"{G}_delivery_errors_total", source="fintoc", reason="fatal") == 0
    print(f"frozen broker: /readyz 503 after {lost_after:.2f} s")


@pytest.mark.kafka
@pytest.mark.slow
def test_a_broker_that_lost_the_producer_state_gets_a_new_producer(
    unique_name: Callable[[str], str],
) -> None:
    """The embedded broker keeps nothing across a restart: the producer it knew is gone, so
    this (and only this) kind of outage rebuilds the producer, without a process restart."""
    broker = OwnBroker(use_apache=False)
    broker.start()
    try:
        settings = settings_from_toml(gateway_toml(broker.bootstrap, unique_name("amnesia")))
        ensure_topics(settings.admin_config(), implied_topics(settings))
        with serve(create_app(settings), settings) as url:
            first_ok(url, settings)
            broker.kill()
            broker.restart()
            ensure_topics(settings.admin_config(), implied_topics(settings))
            restarted_at = time.monotonic()
            while post(url, settings, "fintoc").status_code != 200:
                assert time.monotonic() - restarted_at < 90, "no 200 after the restart"
                time.sleep(0.2)
            samples = scrape(url)
    finally:
        broker.stop()
    assert value(samples, f"{G}_producer_rebuilds_total") >= 1
    errors = {
        reason: value(samples, f"{G}_delivery_errors_total", source="fintoc", reason=reason)
        for reason in ("fatal", "broker", "timeout")
    }
    print(f"embedded broker restart: {errors}")
