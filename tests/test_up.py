"""`webhook-bridge up` (what `make run` runs): everything comes up, answers, and stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from gateway.broker import free_port, port_in_use
from tests.support import DEMO_ENV

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent


def demo_config_on_free_ports(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    ports = {
        name: free_port()
        for name in ("broker", "gateway", "compactor", "reorderer", "fanout", "receiver")
    }
    text = (REPO / "deploy" / "demo.toml").read_text()
    text = text.replace("127.0.0.1:9092", f"127.0.0.1:{ports['broker']}")
    text = text.replace("port = 8000", f"port = {ports['gateway']}")
    text = text.replace("127.0.0.1:8100", f"127.0.0.1:{ports['receiver']}")
    for name, default in (("compactor", 9101), ("reorderer", 9102), ("fanout", 9103)):
        text = text.replace(f"metrics_port = {default}", f"metrics_port = {ports[name]}")
    text = text.replace(
        "dedup_horizon_s = 604800", f'dedup_horizon_s = 604800\nstate_dir = "{tmp_path / "state"}"'
    )
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path, ports


def test_up_starts_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    config, ports = demo_config_on_free_ports(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_WEBHOOK_SECRET")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "up", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    lines: list[str] = []
    stdout = process.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")))
    reader.start()

    def wait_for(text: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            output = "".join(lines)
            if text in output:
                return output
            time.sleep(0.1)
        return "".join(lines)

    try:
        output = wait_for("webhook-bridge is running", 120)
        assert "webhook-bridge is running" in output, output
        assert "embedded broker (Tansu)" in output
        base = f"http://127.0.0.1:{ports['gateway']}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
        # The printed demo secret signs a webhook that the running gateway accepts.
        secret = re.search(r"export JIKO_WEBHOOK_SECRET='([^']+)'", output)
        assert secret is not None
        sent = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "send", "jiko", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            env={**env, **DEMO_ENV, "JIKO_WEBHOOK_SECRET": secret.group(1)},
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.startswith("200 ")
        for name in ("compactor", "reorderer", "fanout", "receiver:demo-receiver"):
            assert f"{name} up" in output, output
        for name in ("compactor", "reorderer", "fanout"):
            assert httpx.get(f"http://127.0.0.1:{ports[name]}/healthz").status_code == 200
        # ... and the newcomer sees it arrive, signed, at the demo receiver: through the
        # compactor, the reorderer (its window) and the fan-out's HTTP sink.
        event_id = json.loads(sent.stdout[4:])["event_id"]
        arrived = f"event id={event_id} provider=jiko"
        output = wait_for(arrived, 60)
        line = next((x for x in output.splitlines() if arrived in x), "")
        assert line.endswith("verified=yes"), output[-3000:]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(10)
    rest = "".join(lines)
    assert process.returncode == 0, rest
    assert "embedded broker stopped" in rest
    for port in (ports["gateway"], ports["broker"]):
        assert not port_in_use("127.0.0.1", port)


def test_up_refuses_a_broker_address_held_by_something_else(tmp_path: Path) -> None:
    """A port taken by a process that is not Kafka: one clear line, no traceback."""
    import socket

    config, ports = demo_config_on_free_ports(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["broker"]))
        squatter.listen()
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "up", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            env={**os.environ, **DEMO_ENV},
        )
    assert done.returncode != 0
    assert f"127.0.0.1:{ports['broker']} is taken by something that does not answer as Kafka" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not port_in_use("127.0.0.1", ports["gateway"])
