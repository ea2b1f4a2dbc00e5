"""The Apache Kafka component: jars, start, data kept across a restart, clean stop, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from deploy import apache_kafka
from deploy.apache_kafka import ApacheKafka
from deploy.broker import free_port, port_in_use

pytestmark = [pytest.mark.kafka, pytest.mark.real_kafka]
REPO = Path(__file__).resolve().parent.parent


def _read_all(bootstrap: str, topic: str) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "log_level": 0})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[bytes] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(out) < 2:
            msg = consumer.poll(0.2)
            value = msg.value() if msg is not None and msg.error() is None else None
            if value is not None:
                out.append(value)
        return out
    finally:
        consumer.close()


def test_the_pinned_version_is_the_one_compose_and_the_docker_tests_use() -> None:
    version = apache_kafka.kafka_version()
    compose = (REPO / "deploy" / "compose" / "compose.yaml").read_text()
    container = (REPO / "tests" / "kafka_container.py").read_text()
    assert f"apache/kafka:{version}" in compose
    assert f'"apache/kafka:{version}"' in container
    assert apache_kafka.jars_present()


def test_a_node_with_a_data_dir_keeps_topics_and_records_across_a_restart(
    tmp_path: Path,
) -> None:
    port = free_port()
    first = ApacheKafka(data_dir=tmp_path / "kafka", port=port)
    bootstrap = first.start()
    try:
        assert bootstrap == f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("kept", 1, 1)])["kept"].result()
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        producer.produce("kept", b"before")
        assert producer.flush(10) == 0
    finally:
        first.stop()
    assert not port_in_use("127.0.0.1", port)
    again = ApacheKafka(data_dir=tmp_path / "kafka")  # ports come from cluster.json
    assert again.start() == bootstrap
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        producer.produce("kept", b"after")
        assert producer.flush(10) == 0
        assert _read_all(bootstrap, "kept") == [b"before", b"after"]
    finally:
        again.stop()


def test_a_killed_node_is_gone_and_restarts_on_its_port(tmp_path: Path) -> None:
    with apache_kafka.running(nodes=1) as cluster:
        pid = cluster.pids()[1]
        cluster.kill(1)
        assert not cluster.alive(1)
        assert (
            not os.path.exists(f"/proc/{pid}")
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
        cluster.restart(1)
        assert cluster.alive(1)
        assert AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=10).brokers


def test_a_data_dir_of_another_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text(
        '{"cluster_id": "x", "nodes": [{"node_id": 1, "port": 1, "controller_port": 2}]}'
    )
    with pytest.raises(apache_kafka.BrokerError, match="holds a 1-node cluster, not 3"):
        ApacheKafka(nodes=3, data_dir=tmp_path).start()


def test_without_java_one_line_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    problem = apache_kafka.missing_prerequisite()
    assert problem is not None and "Java 17+" in problem and "\n" not in problem


def test_the_broker_command_runs_apache_kafka_and_stops_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "broker", "--engine", "apache", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Apache Kafka ") and f"bootstrap.servers=127.0.0.1:{port}" in line
        process.terminate()
        assert process.wait(timeout=60) == 0
        assert not port_in_use("127.0.0.1", port)
    finally:
        process.kill()
