"""Shared fixtures: a Kafka bootstrap address four ways, and unique names per test.

Kafka mode (``--kafka``, default ``auto``):
- ``apache``: Apache Kafka itself, one KRaft node started from Maven Central's jars
  (`deploy.apache_kafka`) on free loopback ports for the session, stopped at the end.
- ``existing``: ``KAFKA_BOOTSTRAP_SERVERS`` is set: that cluster is used as it is.
- ``embedded``: the Tansu broker (memory only, shows aborted records); the fallback
  where no Java 17+ is installed.
- ``testcontainers``: Apache Kafka in Docker; needs a Docker engine (never skipped
  silently: without one the session errors out).
- ``auto``: ``existing`` when KAFKA_BOOTSTRAP_SERVERS is set, else ``apache`` when
  Java 17+ is installed (its jars are fetched on first use), else ``embedded``.

Tests marked ``real_kafka`` need Apache Kafka (transaction isolation, data that
survives a broker restart, several nodes). They run in every mode but ``embedded``,
where they are reported as skipped with the reason. The header of every run says
which broker it used.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from deploy import apache_kafka
from deploy.apache_kafka import ApacheKafka
from deploy.broker import EmbeddedBroker
from schemas import compiled

KAFKA_MODES = ("apache", "embedded", "existing", "testcontainers")
# Test brokers abort a dead producer's timed-out transaction within 1 s of its
# transaction.timeout.ms (the broker default checks every 10 s), and their log cleaner
# looks for work every second (default 15 s); nothing else differs from
# deploy.apache_kafka's defaults.
TEST_BROKER_CONFIG = {
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    "log.cleaner.backoff.ms": "1000",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kafka",
        choices=("auto", *KAFKA_MODES),
        default="auto",
        help="where Kafka comes from: auto (KAFKA_BOOTSTRAP_SERVERS if set, else Apache "
        "Kafka if Java 17+ is installed, else embedded), apache, embedded, existing, "
        "testcontainers",
    )


def select_kafka_mode(
    option: str,
    environ: dict[str, str] | os._Environ[str],
    apache_problem: Callable[[], str | None] = apache_kafka.missing_prerequisite,
) -> str:
    """The mode for a run: an explicit option wins; auto follows the environment."""
    if option == "auto":
        if environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            return "existing"
        return "embedded" if apache_problem() else "apache"
    if option == "existing" and not environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        raise pytest.UsageError("--kafka=existing needs KAFKA_BOOTSTRAP_SERVERS")
    if option == "apache":
        problem = apache_problem()
        if problem:
            raise pytest.UsageError(f"--kafka=apache: {problem}")
    return option


def _mode(config: pytest.Config) -> str:
    cached = getattr(config, "_wb_kafka_mode", None)
    if cached is None:
        cached = select_kafka_mode(str(config.getoption("--kafka")), os.environ)
        config._wb_kafka_mode = cached  # type: ignore[attr-defined]
    return str(cached)


def pytest_configure(config: pytest.Config) -> None:
    # A compiled module older than its source would test code that is not in the source.
    old = compiled.stale()
    if old:
        pytest.exit(compiled.stale_message(old), returncode=2)


def pytest_report_header(config: pytest.Config) -> list[str]:
    mode = _mode(config)
    if mode == "apache":
        kafka = f"kafka: Apache Kafka {apache_kafka.kafka_version()} (KRaft, from Maven jars)"
    elif mode == "embedded":
        why = apache_kafka.missing_prerequisite() or "chosen with --kafka=embedded"
        kafka = f"kafka: embedded broker (Tansu); real_kafka tests are skipped: {why}"
    elif mode == "existing":
        kafka = f"kafka: existing cluster at {os.environ['KAFKA_BOOTSTRAP_SERVERS']}"
    else:
        kafka = "kafka: Apache Kafka in Docker (testcontainers)"
    built = compiled.compiled()
    modules = f"{len(built)} of {len(compiled.HOT_MODULES)} hot modules compiled (mypyc)"
    return [kafka, f"code: {modules}; the rest as Python"]


@pytest.fixture(scope="session")
def kafka_mode(pytestconfig: pytest.Config) -> str:
    return _mode(pytestconfig)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _mode(config) != "embedded":
        return
    why = apache_kafka.missing_prerequisite() or "--kafka=embedded was chosen"
    reason = f"needs Apache Kafka ({why}); the embedded broker shows aborted records"
    for item in items:
        if "real_kafka" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class KafkaCluster:
    bootstrap: str
    mode: str
    broker: EmbeddedBroker | None = None  # embedded mode only
    apache: ApacheKafka | None = None  # apache mode only

    def client_config(self) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap}

    @property
    def is_apache(self) -> bool:
        """Apache Kafka's semantics (aborted records hidden, data kept, defaults reported)."""
        return self.mode != "embedded"


@pytest.fixture(scope="session")
def kafka(kafka_mode: str) -> Iterator[KafkaCluster]:
    if kafka_mode == "existing":
        yield KafkaCluster(os.environ["KAFKA_BOOTSTRAP_SERVERS"], kafka_mode)
    elif kafka_mode == "testcontainers":
        from tests.kafka_container import ApacheKafka as ApacheKafkaContainer

        container = ApacheKafkaContainer()
        container.start()  # raises at once without a Docker engine: never a silent skip
        try:
            yield KafkaCluster(container.bootstrap, kafka_mode)
        finally:
            container.stop()
    elif kafka_mode == "apache":
        with apache_kafka.running(nodes=1, config=TEST_BROKER_CONFIG) as cluster:
            yield KafkaCluster(cluster.bootstrap, kafka_mode, apache=cluster)
    else:
        broker = EmbeddedBroker()
        broker.start()
        try:
            yield KafkaCluster(broker.bootstrap, kafka_mode, broker)
        finally:
            broker.stop()


class OwnBroker:
    """A single broker of one test's own, for tests that kill it and bring it back.

    Apache Kafka where it can run (its data survives the kill, as in production),
    else the embedded broker (a restart comes back empty: `keeps_data` is False).
    """

    def __init__(self, use_apache: bool) -> None:
        self.apache = ApacheKafka(nodes=1, config=TEST_BROKER_CONFIG) if use_apache else None
        self.embedded = None if use_apache else EmbeddedBroker()
        self.port = 0

    @property
    def keeps_data(self) -> bool:
        return self.apache is not None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.apache is not None:
            self.apache.start()
            self.port = self.apache.node(1).spec.port
        else:
            assert self.embedded is not None
            self.embedded.start()
            self.port = self.embedded.port

    def kill(self) -> None:
        """kill -9."""
        if self.apache is not None:
            self.apache.kill(1)
        else:
            assert self.embedded is not None
            self.embedded.stop()

    def restart(self) -> None:
        """Back on the same port: Apache Kafka with its data, the embedded broker empty."""
        if self.apache is not None:
            self.apache.restart(1)
        else:
            self.embedded = EmbeddedBroker(port=self.port)
            self.embedded.start()

    def stop(self) -> None:
        if self.apache is not None:
            self.apache.stop()
        elif self.embedded is not None:
            self.embedded.stop()


@pytest.fixture
def fresh_broker(kafka_mode: str) -> Iterator[OwnBroker]:
    """A broker of the test's own, for tests that kill or restart it."""
    use_apache = kafka_mode != "embedded" and apache_kafka.missing_prerequisite() is None
    broker = OwnBroker(use_apache)
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
