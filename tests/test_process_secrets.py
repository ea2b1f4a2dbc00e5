"""A process holds only the secrets it uses: the compactor, the reorderer and the fan-out
start, and carry an event to a sink, with no provider secret in their environment; the
gateway refuses to start without its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas.topics import TopicNames
from tests.conftest import KafkaCluster
from tests.consumer_support import (
    BASE_US,
    REPO,
    RawProducer,
    Stages,
    create_topics,
    envelope,
    load_settings,
    read_topic,
)

pytestmark = pytest.mark.kafka
PORT_0 = ("--metrics-port", "0")
PROVIDER_SECRETS = ("JIKO_WEBHOOK_SECRET", "FINTOC_WEBHOOK_SECRET", "JPMORGAN_WEBHOOK_SECRET")


def _config(tmp_path: Path, bootstrap: str, prefix: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
topic_prefix = "{prefix}"
[kafka]
"bootstrap.servers" = "{bootstrap}"
[compactor]
state_dir = "{tmp_path / "state"}"
[reorderer]
window_s = 0.2
[sources.jiko]
scheme = "jiko"
secrets = ["JIKO_WEBHOOK_SECRET"]
[sources.fintoc]
scheme = "fintoc"
secrets = ["FINTOC_WEBHOOK_SECRET"]
[sources.jpmorgan]
scheme = "jpmorgan"
[sources.jpmorgan.verify]
methods = ["static-headers"]
static_headers = {{ "X-Custom-Key" = "JPMORGAN_WEBHOOK_SECRET" }}
[sinks.audit]
type = "log"
""")
    return path


def _environment(pid: int) -> set[str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return {item.split(b"=", 1)[0].decode() for item in raw.split(b"\0") if item}


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_stages_and_fanout_run_without_provider_secrets(
    kafka: KafkaCluster,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PROVIDER_SECRETS:
        monkeypatch.delenv(name, raising=False)
    prefix = unique_name("nosecret")
    cfg = _config(tmp_path, kafka.bootstrap, prefix)
    settings = load_settings(cfg)  # the config itself reads no secret
    create_topics(settings)
    names = TopicNames(prefix)
    stages = Stages(tmp_path)
    log = tmp_path / "fanout.log"
    with log.open("ab") as out:
        fanout = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "fanout", "--config", str(cfg), *PORT_0],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=out,
        )
    try:
        procs = [stages.start(s, cfg) for s in ("compactor", "reorderer")]
        for proc in procs:
            proc.wait_ready()
            assert proc.process is not None
            assert not _environment(proc.process.pid) & set(PROVIDER_SECRETS)
        assert not _environment(fanout.pid) & set(PROVIDER_SECRETS)

        producer = RawProducer(kafka.bootstrap)
        producer.send(names.raw("jiko"), envelope("e1", "k1", BASE_US, source="jiko"))
        producer.flush()
        ordered = read_topic(kafka.bootstrap, names.ordered("jiko"), expect=1)
        assert [r.event_id for r in ordered] == ["e1"]

        def delivered() -> bool:
            found = re.search(r"metrics_port=(\d+)", log.read_text(errors="replace"))
            if found is None:
                return False
            url = f"http://127.0.0.1:{found.group(1)}/metrics"
            try:
                text = urllib.request.urlopen(url, timeout=2).read().decode()
            except OSError:
                return False
            return 'webhook_bridge_fanout_delivered_total{provider="jiko",sink="audit"} 1.0' in text

        _wait(delivered, f"the fan-out's log sink delivery\n{log.read_text(errors='replace')}")
        assert fanout.poll() is None, log.read_text(errors="replace")
    finally:
        stages.close()
        fanout.kill()
        fanout.wait(10)


def test_the_gateway_refuses_to_start_without_its_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in PROVIDER_SECRETS:
        monkeypatch.delenv(name, raising=False)
    cfg = _config(tmp_path, "127.0.0.1:9", "nosecret")
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "gateway", "--config", str(cfg)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "config error: sources.jiko.secrets: environment variable JIKO_WEBHOOK_SECRET is not set"
    )
