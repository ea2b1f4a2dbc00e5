"""Shared fixtures: a Kafka bootstrap address three ways, and unique names per test.

Kafka mode (``kafka_mode``):
- ``embedded`` (default): a fresh Tansu broker on a free loopback port for the session,
  killed at the end.
- ``existing``: ``KAFKA_BOOTSTRAP_SERVERS`` is set: that cluster is used as it is.
- ``testcontainers``: ``pytest --kafka=testcontainers`` starts Apache Kafka in Docker.
  Needs a Docker engine; without one the session errors out (it is never skipped
  silently, since it was asked for).

Tests marked ``real_kafka`` need Kafka's transaction isolation, which the embedded
broker lacks; they run only in the two other modes and are reported as skipped
with that reason otherwise.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from gateway.broker import EmbeddedBroker

KAFKA_MODES = ("embedded", "existing", "testcontainers")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kafka",
        choices=("auto", *KAFKA_MODES),
        default="auto",
        help="where Kafka comes from: auto (KAFKA_BOOTSTRAP_SERVERS if set, else embedded), "
        "embedded, existing, testcontainers",
    )


def select_kafka_mode(option: str, environ: dict[str, str] | os._Environ[str]) -> str:
    """The mode for a run: an explicit option wins; auto follows KAFKA_BOOTSTRAP_SERVERS."""
    if option == "auto":
        return "existing" if environ.get("KAFKA_BOOTSTRAP_SERVERS") else "embedded"
    if option == "existing" and not environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        raise pytest.UsageError("--kafka=existing needs KAFKA_BOOTSTRAP_SERVERS")
    return option


@pytest.fixture(scope="session")
def kafka_mode(pytestconfig: pytest.Config) -> str:
    return select_kafka_mode(str(pytestconfig.getoption("--kafka")), os.environ)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mode = select_kafka_mode(str(config.getoption("--kafka")), os.environ)
    if mode != "embedded":
        return
    reason = (
        "needs Apache Kafka's transaction isolation: run with --kafka=testcontainers "
        "or KAFKA_BOOTSTRAP_SERVERS (the embedded broker shows aborted records)"
    )
    for item in items:
        if "real_kafka" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class KafkaCluster:
    bootstrap: str
    mode: str
    broker: EmbeddedBroker | None = None  # only in embedded mode: lets fault tests kill it

    def client_config(self) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap}


@pytest.fixture(scope="session")
def kafka(kafka_mode: str) -> Iterator[KafkaCluster]:
    if kafka_mode == "existing":
        yield KafkaCluster(os.environ["KAFKA_BOOTSTRAP_SERVERS"], kafka_mode)
    elif kafka_mode == "testcontainers":
        from tests.kafka_container import ApacheKafka

        container = ApacheKafka()
        container.start()  # raises at once without a Docker engine: never a silent skip
        try:
            yield KafkaCluster(container.bootstrap, kafka_mode)
        finally:
            container.stop()
    else:
        broker = EmbeddedBroker()
        broker.start()
        try:
            yield KafkaCluster(broker.bootstrap, kafka_mode, broker)
        finally:
            broker.stop()


@pytest.fixture
def fresh_broker() -> Iterator[EmbeddedBroker]:
    """A broker of the test's own, for tests that kill or restart it."""
    broker = EmbeddedBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


_counter = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory for topic, group and prefix names that no other test uses."""
    return _unique


def fast_consumer_config(bootstrap: str, group: str, **extra: str) -> dict[str, str]:
    """Consumer settings that avoid the embedded broker's slow first join."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": "false",
        "session.timeout.ms": "6000",
        "heartbeat.interval.ms": "500",
        **extra,
    }
