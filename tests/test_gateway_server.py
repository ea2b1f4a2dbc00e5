"""`webhook-bridge gateway` as a real process: SIGTERM drains requests in flight, then exits."""

from __future__ import annotations

import os
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


def test_sigterm_drains_in_flight_requests(kafka: KafkaCluster, tmp_path: Path) -> None:
    port = free_port()
    text = (
        gateway_toml(kafka.bootstrap, f"drain-{time.time_ns()}") + f"\n[gateway]\nport = {port}\n"
    )
    settings = settings_from_toml(text)
    ensure_topics(settings.admin_config(), implied_topics(settings))
    config = tmp_path / "c.toml"
    config.write_text(text)
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "gateway", "--config", str(config)],
        env={**os.environ, **DEMO_ENV, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{base}/healthz", process, 30)
        source = settings.sources["fintoc"]
        answers: list[tuple[int, str]] = []  # (status or 0 for a transport error, id)
        lock = threading.Lock()
        started = threading.Barrier(9)

        def post() -> None:
            body = sample_body("fintoc", now=time.time())
            headers = sign_request(
                source.scheme, verify_context(settings, source.name), body, time.time()
            )
            with httpx.Client(timeout=15) as client:
                started.wait()
                try:
                    response = client.post(f"{base}/webhooks/fintoc", content=body, headers=headers)
                except httpx.TransportError as exc:
                    with lock:  # refused after shutdown began: the provider retries
                        answers.append((0, type(exc).__name__))
                    return
                with lock:
                    answers.append((response.status_code, response.json().get("event_id", "")))

        threads = [threading.Thread(target=post) for _ in range(8)]
        for thread in threads:
            thread.start()
        started.wait()
        time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=30)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert len(answers) == len(threads), "a request got no answer and no error"
    assert {status for status, _ in answers} <= {0, 200, 503}
    acknowledged = {event_id for status, event_id in answers if status == 200}
    # Requests in flight when SIGTERM arrived are drained: answered after their ack.
    assert acknowledged, f"no request was drained to a 200: {answers}"
    stored = {
        m.key().decode()
        for m in read_topic(kafka.bootstrap, names(settings).raw("fintoc"), idle_s=2)
    }
    assert acknowledged <= stored
    assert process.stderr is not None
    assert "gateway stopped" in process.stderr.read()
