"""Log throttling for librdkafka clients: one line per kind of message per interval, with a
count; against a fake clock, and against a real client that cannot reach its broker."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer

from schemas.logs import KafkaClientLog, Throttle
from tests.support import LogRecords, captured_logs

REFUSED = (
    "[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 "
    "failed: Connection refused (after {ms}ms in state CONNECT)"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def kafka_records(logged: LogRecords) -> list[dict[str, Any]]:
    return logged.fields("librdkafka", "kafka client error")


@pytest.fixture
def logged() -> Iterator[LogRecords]:
    with captured_logs() as records:
        yield records


def test_throttle_admits_the_first_and_counts_the_rest() -> None:
    clock = Clock()
    throttle: Throttle[str] = Throttle(10.0, clock)
    assert throttle.admit("a") == 0
    assert [throttle.admit("a") for _ in range(5)] == [None] * 5
    assert throttle.admit("b") == 0  # another kind has its own interval
    clock.now += 10.0
    assert throttle.admit("a") == 5  # the next line carries what was suppressed
    clock.now += 10.0
    throttle.admit("a")
    assert throttle.expired() == []  # nothing suppressed since "a" was last admitted
    throttle.admit("a")
    throttle.admit("a")
    clock.now += 10.0
    assert throttle.expired() == [("a", 2)]
    assert throttle.expired() == []
    # The report opened a new interval: a steady stream gives one line per interval.
    assert throttle.admit("a") is None
    clock.now += 10.0
    assert throttle.expired() == [("a", 1)]
    clock.now += 10.0
    assert throttle.expired() == []  # a quiet interval: forgotten
    assert throttle.admit("a") == 0


def test_repeated_librdkafka_lines_are_logged_once_per_interval_with_a_count(
    logged: LogRecords,
) -> None:
    clock = Clock()
    client_log = KafkaClientLog("producer", interval_s=10.0, clock=clock)
    for ms in range(100):  # one second of an outage, as librdkafka reports it
        client_log.log(
            logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", REFUSED.format(ms=ms)
        )
        client_log.log(logging.WARNING, "%s [%s] %s", "REQTMOUT", "rdkafka#producer-1", "timed out")
    first = kafka_records(logged)
    assert [(r["code"], r["level"]) for r in first] == [
        ("FAIL", logging.ERROR),
        ("REQTMOUT", logging.WARNING),
    ]
    assert first[0]["client"] == "producer"
    assert first[0]["detail"] == REFUSED.format(ms=0)  # the message itself, in full
    assert "repeated" not in first[0]

    logged.clear()
    clock.now += 10.0
    client_log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", REFUSED.format(ms=7))
    [again] = kafka_records(logged)
    assert (again["code"], again["repeated"]) == ("FAIL", 99)

    logged.clear()
    client_log.flush()  # the REQTMOUT burst stopped: its count is still reported, once
    [flushed] = kafka_records(logged)
    assert (flushed["code"], flushed["repeated"]) == ("REQTMOUT", 99)
    client_log.flush()
    assert [r for r in kafka_records(logged) if r["code"] == "REQTMOUT"] == [flushed]


def test_a_steady_stream_is_one_line_per_interval(logged: LogRecords) -> None:
    """An outage of 60 s at 100 lines a second, flushed every second as the gateway's
    broker watch does: the first line, then one line per 10 s with its count."""
    clock = Clock()
    client_log = KafkaClientLog("producer", interval_s=10.0, clock=clock)
    for _second in range(60):
        for ms in range(100):
            client_log.log(
                logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#p-1", REFUSED.format(ms=ms)
            )
        clock.now += 1.0
        client_log.flush()
    records = kafka_records(logged)
    assert [r.get("repeated", 0) for r in records] == [0, 999] + [1000] * 5


def test_client_errors_are_throttled_and_fatal_ones_logged_as_errors(
    logged: LogRecords,
) -> None:
    seen: list[str] = []
    client_log = KafkaClientLog("producer", clock=Clock(), on_error=lambda e: seen.append(e.name()))
    for n in range(50):  # the counts in the text change; the kind does not
        client_log.error(KafkaError(KafkaError._ALL_BROKERS_DOWN, f"{n % 2}/2 brokers are down"))
    client_log.error(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    records = kafka_records(logged)
    assert [(r["code"], r["level"]) for r in records] == [
        ("_ALL_BROKERS_DOWN", logging.WARNING),
        ("_FATAL", logging.ERROR),
    ]
    assert len(seen) == 51, "the error hook sees every error, throttled or not"


def test_a_level_that_is_off_is_neither_logged_nor_counted(
    logged: LogRecords,
) -> None:
    logging.getLogger("webhook_bridge").setLevel(logging.WARNING)  # restored by the fixture
    client_log = KafkaClientLog("consumer", clock=Clock())
    client_log.log(logging.INFO, "%s [%s] %s", "CONFWARN", "rdkafka#consumer-1", "x")
    assert kafka_records(logged) == []
    assert client_log.throttle.expired() == []


def test_a_real_client_that_cannot_connect_logs_a_line_per_kind(
    logged: LogRecords,
) -> None:
    calls: list[str] = []
    client_log = KafkaClientLog("producer", on_error=lambda e: calls.append(e.name()))
    original = client_log.log

    def counting_log(level: int, fmt: str, *args: Any) -> None:
        calls.append(str(args[0]) if args else fmt)
        original(level, fmt, *args)

    client_log.log = counting_log  # type: ignore[method-assign]
    producer = Producer(
        {
            "bootstrap.servers": "127.0.0.1:9",  # discard: nobody listens (no free_port race)
            "reconnect.backoff.ms": 10,
            "reconnect.backoff.max.ms": 50,
            "log_level": 3,
            **client_log.config(),
        }
    )
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        producer.poll(0.05)
    assert len(calls) >= 10, calls  # librdkafka kept reporting the refused connection...
    kinds = [(r["msg"], r["code"]) for r in kafka_records(logged)]
    assert len(kinds) == len(set(kinds)), [r["detail"] for r in kafka_records(logged)]
    assert ("librdkafka", "FAIL") in kinds
