"""`webhook-bridge up` (what `make run` runs): everything comes up, answers, and stops on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
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
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "webhook-bridge is running" in line:
                break
        output = "".join(lines)
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
        for name in ("compactor", "reorderer", "fanout"):
            if f"{name} up" in output:
                metrics = httpx.get(f"http://127.0.0.1:{ports[name]}/healthz")
                assert metrics.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
    assert process.returncode == 0, "".join(lines) + rest
    assert "embedded broker stopped" in rest
    for port in (ports["gateway"], ports["broker"]):
        assert not port_in_use("127.0.0.1", port)
