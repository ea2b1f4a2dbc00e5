"""No drift between the code and deploy/: the real processes, started against the embedded
broker, expose every metric the alert rules and the dashboard use, with bounded labels."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.broker import free_port
from gateway.samples import sample_body
from gateway.topics import ensure_topics, implied_topics
from gateway.verify import sign_request
from tests.conftest import KafkaCluster
from tests.deploy_support import ALERTS_FILE, find_tool, metric_names_used, require_tool
from tests.support import DEMO_ENV, settings_from_toml

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
PROCESSES = ("gateway", "compactor", "reorderer", "fanout")


def _config(bootstrap: str, prefix: str, tmp_path: Path) -> tuple[str, dict[str, int]]:
    ports = {name: free_port() for name in PROCESSES}
    text = (REPO / "deploy" / "demo.toml").read_text()
    text = text.replace('topic_prefix = "webhooks"', f'topic_prefix = "{prefix}"')
    text = text.replace("127.0.0.1:9092", bootstrap)
    text = text.replace("port = 8000", f"port = {ports['gateway']}")
    for name, default in (("compactor", 9101), ("reorderer", 9102), ("fanout", 9103)):
        text = text.replace(f"metrics_port = {default}", f"metrics_port = {ports[name]}")
    text = text.replace(
        "dedup_horizon_s = 604800", f'dedup_horizon_s = 604800\nstate_dir = "{tmp_path / "state"}"'
    )
    text = text.replace("http://127.0.0.1:8100/events", f"http://127.0.0.1:{free_port()}/events")
    return text, ports


@pytest.fixture(scope="module")
def running(
    kafka: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, int]]]:
    tmp_path = tmp_path_factory.mktemp("drift")
    prefix = f"drift-{uuid.uuid4().hex[:8]}"
    text, ports = _config(kafka.bootstrap, prefix, tmp_path)
    settings = settings_from_toml(text)
    ensure_topics(settings.admin_config(), implied_topics(settings))
    path = tmp_path / "config.toml"
    path.write_text(text)
    env = {**os.environ, **DEMO_ENV, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", name, "--config", str(path)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in PROCESSES
    ]
    try:
        for name in PROCESSES:
            url = f"http://127.0.0.1:{ports[name]}/healthz"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{name} did not come up"
                time.sleep(0.2)
        yield text, ports
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()


def test_every_metric_in_alerts_and_dashboard_is_exposed(
    running: tuple[str, dict[str, int]],
) -> None:
    text, ports = running
    settings = settings_from_toml(text)
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    marker = uuid.uuid4().hex
    source = settings.sources["fintoc"]
    body = sample_body("fintoc", event_id=f"evt_{marker}", now=time.time())
    headers = sign_request(source.scheme, source.verify_context, body, time.time())
    assert (
        httpx.post(f"{gateway}/webhooks/fintoc", content=body, headers=headers).status_code == 200
    )
    assert httpx.post(f"{gateway}/webhooks/fintoc", content=body).status_code == 401
    assert httpx.post(f"{gateway}/webhooks/src-{marker}", content=body).status_code == 404

    exposed: set[str] = set()
    labels: dict[str, set[str]] = {}
    for name in PROCESSES:
        scrape = httpx.get(f"http://127.0.0.1:{ports[name]}/metrics").text
        for family in text_string_to_metric_families(scrape):
            exposed.add(family.name)
            for sample in family.samples:
                exposed.add(sample.name)
                for key, value in sample.labels.items():
                    labels.setdefault(key, set()).add(value)
    used = set(metric_names_used())
    assert used, "the deploy files use no metric at all"
    missing = sorted(n for n in used if n not in exposed)
    assert missing == [], f"used in deploy/ but exposed by no process: {missing}"

    bounded = {
        "source": set(settings.sources) | {"_unknown"},
        "provider": set(settings.providers),
        "sink": set(settings.sinks),
        "stage": {"compactor", "reorderer"},
        "key_id": {k for s in settings.sources.values() for k in s.key_ids} | {""},
    }
    for key, allowed in bounded.items():
        assert labels.get(key, set()) <= allowed, (key, labels.get(key, set()) - allowed)
    every_value = {v for values in labels.values() for v in values}
    assert not any(marker in value for value in every_value), "a request created a label value"


def test_prometheus_scrapes_every_process_and_evaluates_every_rule(
    running: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    """A real Prometheus server (Debian's, from `make tools`) on loopback: every target up,
    every alert rule evaluated against the live series without an error."""
    binary = find_tool("prometheus")
    require_tool("prometheus", binary, "BRIDGE_REQUIRE_PROMTOOL")
    assert binary is not None
    _, ports = running
    web = free_port()
    jobs = "\n".join(
        f"""  - job_name: webhook-bridge-{name}
    static_configs:
      - targets: ["127.0.0.1:{ports[name]}"]
        labels:
          component: {name}"""
        for name in PROCESSES
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {ALERTS_FILE}
scrape_configs:
{jobs}
""")
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{web}/api/v1"
    try:
        deadline = time.monotonic() + 60
        targets: list[dict[str, object]] = []
        rules: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                targets = httpx.get(f"{api}/targets").json()["data"]["activeTargets"]
                groups = httpx.get(f"{api}/rules").json()["data"]["groups"]
            except (httpx.HTTPError, KeyError, ValueError):
                continue
            rules = [rule for group in groups for rule in group["rules"]]
            evaluated = rules and all(
                not str(r.get("lastEvaluation", "")).startswith("0001") for r in rules
            )
            if (
                len(targets) == len(PROCESSES)
                and all(t["health"] == "up" for t in targets)
                and evaluated
            ):
                break
        assert sorted(str(t["health"]) for t in targets) == ["up"] * len(PROCESSES), targets
        assert rules, "Prometheus loaded no rules"
        broken = {
            str(r["name"]): r.get("lastError")
            for r in rules
            if r.get("health") != "ok" or r.get("lastError")
        }
        assert broken == {}, broken
    finally:
        server.terminate()
        server.wait(timeout=20)
