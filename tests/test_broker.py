"""The embedded broker component: start, readiness, free port, clean stop, clear errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from deploy.broker import EmbeddedBroker, free_port, port_in_use
from schemas.errors import BrokerError


def test_start_answers_metadata_and_stop_frees_the_port() -> None:
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    try:
        assert broker.port > 0 and bootstrap == f"127.0.0.1:{broker.port}"
        producer = Producer({"bootstrap.servers": bootstrap})
        assert producer.list_topics(timeout=5).brokers  # answers a metadata request
        producer.produce("broker-smoke", b"v")
        assert producer.flush(10) == 0
    finally:
        broker.stop()
    assert not broker.alive()
    assert not port_in_use("127.0.0.1", broker.port)


def test_chosen_port_is_used() -> None:
    port = free_port()
    with EmbeddedBroker(port=port) as broker:
        assert broker.bootstrap == f"127.0.0.1:{port}"
        assert port_in_use("127.0.0.1", port)


def test_port_taken_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            EmbeddedBroker(port=port).start()


def test_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-broker"))
    with pytest.raises(BrokerError, match=r"CALF_TANSU_BIN=.* is not an executable"):
        EmbeddedBroker().start()


def test_broker_that_dies_at_start_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "broker"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrokerError, match="exited with code 3"):
        EmbeddedBroker(binary=str(fake)).start(timeout_s=5)


def test_broker_command_runs_and_stops_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"bootstrap.servers=127.0.0.1:{port}" in line
        assert port_in_use("127.0.0.1", port)
        process.terminate()
        assert process.wait(timeout=15) == 0
        deadline = time.monotonic() + 5
        while port_in_use("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_in_use("127.0.0.1", port)
    finally:
        process.kill()
