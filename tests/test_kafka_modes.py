"""The fixture's choice of Kafka: embedded by default, an existing cluster, or testcontainers."""

from __future__ import annotations

import pytest

from tests.conftest import select_kafka_mode


@pytest.mark.parametrize(
    ("option", "environ", "expected"),
    [
        ("auto", {}, "embedded"),
        ("auto", {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, "existing"),
        ("embedded", {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, "embedded"),
        ("existing", {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, "existing"),
        ("testcontainers", {}, "testcontainers"),
        ("testcontainers", {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, "testcontainers"),
    ],
)
def test_mode_selection(option: str, environ: dict[str, str], expected: str) -> None:
    assert select_kafka_mode(option, environ) == expected


def test_existing_without_address_is_a_usage_error() -> None:
    with pytest.raises(pytest.UsageError, match="KAFKA_BOOTSTRAP_SERVERS"):
        select_kafka_mode("existing", {})


def test_testcontainers_mode_configures_a_single_kraft_node() -> None:
    from tests.kafka_container import APACHE_KAFKA_IMAGE, kraft_environment

    env = kraft_environment(41234)
    assert APACHE_KAFKA_IMAGE.startswith("apache/kafka:")
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:41234"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    # Transactions need the transaction log to be creatable on one broker.
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
