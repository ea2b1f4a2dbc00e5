"""Apache Kafka (the official `apache/kafka` image, KRaft) for `pytest --kafka=testcontainers`.

testcontainers' own KafkaContainer drives Confluent's cp-kafka start scripts, which
the Apache image does not have, so this configures a single KRaft node directly.
The host port is chosen up front and bound 1:1, so the advertised listener is the
address clients on the host actually reach.
"""

from __future__ import annotations

from typing import Any

from deploy.broker import free_port

APACHE_KAFKA_IMAGE = "apache/kafka:4.1.1"


def kraft_environment(host_port: int) -> dict[str, str]:
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{host_port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_NUM_PARTITIONS": "3",
    }


class ApacheKafka:
    """Start/stop one Apache Kafka container; needs a Docker engine."""

    def __init__(self, image: str = APACHE_KAFKA_IMAGE) -> None:
        from testcontainers.core.container import DockerContainer

        self.host_port = free_port()
        self.container: Any = DockerContainer(image).with_bind_ports(9092, self.host_port)
        for key, value in kraft_environment(self.host_port).items():
            self.container.with_env(key, value)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.host_port}"

    def start(self, timeout_s: float = 120.0) -> str:
        from testcontainers.core.waiting_utils import wait_for_logs

        self.container.start()
        wait_for_logs(self.container, "Kafka Server started", timeout=timeout_s)
        return self.bootstrap

    def stop(self) -> None:
        self.container.stop()
