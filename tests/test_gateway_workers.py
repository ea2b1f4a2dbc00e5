"""`webhook-bridge gateway --workers 2`: two processes on one port, one /metrics for both."""

from __future__ import annotations

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

from deploy.broker import free_port
from deploy.samples import sample_body
from deploy.topics import ensure_topics
from gateway.sources import verify_context
from gateway.verify import sign_request
from schemas.topics import implied_topics, names
from tests.conftest import KafkaCluster
from tests.support import DEMO_ENV, gateway_toml, read_topic, settings_from_toml, wait_until_ok

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parent.parent
REQUESTS = 60


def _workers(pid: int) -> list[int]:
    """The worker processes uvicorn spawned under `pid` (not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            cmdline = (entry / "cmdline").read_bytes() if entry.exists() else b""
            if re.search(rf"^PPid:\s+{pid}$", status, re.M) and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


def test_two_workers_serve_one_port_and_their_counters_add_up(
    kafka: KafkaCluster, tmp_path: Path
) -> None:
    port = free_port()
    text = gateway_toml(kafka.bootstrap, f"workers-{time.time_ns()}") + (
        f"\n[gateway]\nport = {port}\nworkers = 2\n"
    )
    settings = settings_from_toml(text)
    ensure_topics(settings.admin_config(), implied_topics(settings))
    config = tmp_path / "c.toml"
    config.write_text(text)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "gateway", "--config", str(config)],
        env={
            **os.environ,
            **DEMO_ENV,
            "PYTHONPATH": str(REPO),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{base}/readyz", process, 60)
        workers = _workers(process.pid)
        assert len(workers) == 2, workers

        source = settings.sources["fintoc"]
        context = verify_context(settings, "fintoc")
        ids: list[str] = []
        lock = threading.Lock()

        def post(count: int) -> None:
            for _ in range(count):
                body = sample_body("fintoc", now=time.time())
                headers = sign_request(source.scheme, context, body, time.time())
                headers["connection"] = "close"  # each request a new connection
                answer = httpx.post(f"{base}/webhooks/fintoc", content=body, headers=headers)
                assert answer.status_code == 200, answer.text
                with lock:
                    ids.append(answer.json()["event_id"])

        threads = [threading.Thread(target=post, args=(REQUESTS // 6,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(ids) == REQUESTS

        # Each worker wrote its own series (files named by pid) ...
        served = {
            int(m.group(1))
            for f in metrics_dir.glob("counter_*.db")
            if (m := re.search(r"_(\d+)\.db$", f.name))
        }
        assert served == set(workers), (served, workers)
        # ... and any worker's /metrics adds them up.
        wanted = (
            f'webhook_bridge_gateway_requests_total{{outcome="accepted",source="fintoc"}} '
            f"{float(REQUESTS)}"
        )
        for _ in range(4):
            text_out = httpx.get(f"{base}/metrics").text
            assert wanted in text_out, [
                line for line in text_out.splitlines() if "requests_total" in line
            ]
        stored = {
            m.key().decode()
            for m in read_topic(kafka.bootstrap, names(settings).raw("fintoc"), expect=REQUESTS)
        }
        assert set(ids) <= stored
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
