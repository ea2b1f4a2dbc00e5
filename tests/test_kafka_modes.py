"""The fixture's choice of Kafka: Apache Kafka by default, an existing cluster, the
embedded fallback without Java, or testcontainers."""

from __future__ import annotations

import pytest

from tests.conftest import select_kafka_mode


def _java_ok() -> str | None:
    return None


def _no_java() -> str | None:
    return "Apache Kafka needs Java 17+ and no `java` was found on PATH"


@pytest.mark.parametrize(
    ("option", "environ", "apache_problem", "expected"),
    [
        ("auto", {}, _java_ok, "apache"),
        ("auto", {}, _no_java, "embedded"),
        ("auto", {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, _java_ok, "existing"),
        ("embedded", {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, _java_ok, "embedded"),
        ("existing", {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, _no_java, "existing"),
        ("apache", {}, _java_ok, "apache"),
        ("testcontainers", {}, _no_java, "testcontainers"),
        ("testcontainers", {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, _java_ok, "testcontainers"),
    ],
)
def test_mode_selection(
    option: str, environ: dict[str, str], apache_problem: object, expected: str
) -> None:
    assert select_kafka_mode(option, environ, apache_problem) == expected  # type: ignore[arg-type]


def test_existing_without_address_is_a_usage_error() -> None:
    with pytest.raises(pytest.UsageError, match="KAFKA_BOOTSTRAP_SERVERS"):
        select_kafka_mode("existing", {})


def test_apache_without_java_is_a_usage_error_naming_what_is_missing() -> None:
    with pytest.raises(pytest.UsageError, match=r"--kafka=apache: .*Java 17\+"):
        select_kafka_mode("apache", {}, _no_java)


def test_testcontainers_mode_configures_a_single_kraft_node() -> None:
    from tests.kafka_container import APACHE_KAFKA_IMAGE, kraft_environment

    env = kraft_environment(41234)
    assert APACHE_KAFKA_IMAGE.startswith("apache/kafka:")
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:41234"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    # Transactions need the transaction log to be creatable on one broker.
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
