"""No drift between the code and deploy/: the real processes, started against the embedded
broker, expose every metric the alert rules and the dashboard use, with bounded labels.

Bounded means: every value of every label is in `label_domains()` (tests/deploy_support.py),
which is built from the code's own tables and the config. The label matchers of the alert
rules and the dashboard are checked against the same sets, offline: a matcher on a value the
code never produces (a typo, a renamed outcome) selects nothing and the alert never fires.
"""

from __future__ import annotations

import contextlib
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

from deploy.broker import free_port
from deploy.samples import sample_body
from deploy.topics import ensure_topics
from gateway.sources import verify_context
from gateway.verify import sign_request
from schemas.config import Settings, load
from schemas.topics import implied_topics
from tests.conftest import KafkaCluster
from tests.deploy_support import (
    ALERTS_FILE,
    COMPOSE_CONFIG,
    DEMO_CONFIG,
    K8S_CONFIG,
    METRIC_CATALOGUE,
    UP,
    alert_rules,
    allowed_values,
    client_default_label_domains,
    code_metrics,
    dashboard_queries,
    dashboard_variables,
    dummy_env,
    label_domains,
    load_dashboard,
    matcher_problems,
    metric_names_used,
    metric_of,
    promql_matchers,
    variable_problems,
)
from tests.prometheus_support import real_prometheus
from tests.support import DEMO_ENV, settings_from_toml

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
            [sys.executable, "-m", "deploy.cli", name, "--config", str(path)],
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


@pytest.mark.kafka
@pytest.mark.slow
def test_every_metric_in_alerts_and_dashboard_is_exposed(
    running: tuple[str, dict[str, int]],
) -> None:
    text, ports = running
    settings = settings_from_toml(text)
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    marker = uuid.uuid4().hex
    # A signed request to every source: the verified series (source, scheme, key_id, mode)
    # are created on first use, so every verifier has to report its labels once.
    for name, source in settings.sources.items():
        event_id = f"evt_{name}_{marker}"
        body = sample_body(source.scheme, event_id=event_id, now=time.time())
        headers = sign_request(
            source.scheme,
            verify_context(settings, source.name),
            body,
            time.time(),
            event_id=event_id,
        )
        response = httpx.post(f"{gateway}/webhooks/{name}", content=body, headers=headers)
        assert response.status_code == source.success_status, (name, response.text)
    assert httpx.post(f"{gateway}/webhooks/fintoc", content=body).status_code == 401
    assert httpx.post(f"{gateway}/webhooks/src-{marker}", content=body).status_code == 404

    exposed: set[str] = set()
    samples: list[tuple[str, dict[str, str]]] = []
    for name in PROCESSES:
        scrape = httpx.get(f"http://127.0.0.1:{ports[name]}/metrics").text
        for family in text_string_to_metric_families(scrape):
            exposed.add(family.name)
            for sample in family.samples:
                exposed.add(sample.name)
                samples.append((sample.name, sample.labels))
                if name == "gateway" and sample.name == "webhook_bridge_broker_reachable":
                    assert (sample.labels, sample.value) == ({"process": "gateway"}, 1.0)
    gateway_promised = {
        m
        for m in METRIC_CATALOGUE
        if m.startswith("webhook_bridge_gateway_") or m == "webhook_bridge_broker_reachable"
    }
    assert sorted(gateway_promised - exposed) == [], "promised in the README, not exposed"
    used = set(metric_names_used())
    assert used, "the deploy files use no metric at all"
    missing = sorted(n for n in used if n not in exposed)
    assert missing == [], f"used in deploy/ but exposed by no process: {missing}"

    # The fan-out serves the global registry: prometheus_client's own collectors come along.
    domains = {**label_domains(settings), **client_default_label_domains()}
    code = code_metrics()
    unbounded: set[str] = set()
    for sample_name, labels in samples:
        metric = metric_of(sample_name)
        for key, value in labels.items():
            if key == "le":
                allowed = code[metric].buckets if metric in code else None
            else:
                allowed = allowed_values(domains, metric, key)
            if allowed is None:
                unbounded.add(f"{metric}: label {key!r} has no known bounded set")
            elif value not in allowed:
                unbounded.add(f"{metric}{{{key}={value!r}}}: not in {sorted(allowed)}")
    assert sorted(unbounded) == []
    verified = {
        labels["source"]
        for sample_name, labels in samples
        if metric_of(sample_name) == "webhook_bridge_gateway_verified_total"
    }
    assert verified == set(settings.sources), "every source's verified series was checked"
    every_value = {v for _, labels in samples for v in labels.values()}
    assert not any(marker in value for value in every_value), "a request created a label value"


# --------------------------------------------------------------------------- offline


def deploy_settings(path: Path) -> Settings:
    return load(path, env=dummy_env(path))


DEPLOY_CONFIGS = [
    pytest.param(path, id=f"{path.parent.name}-{path.name}")
    for path in (DEMO_CONFIG, COMPOSE_CONFIG, K8S_CONFIG)
]


def test_label_domains_cover_every_label_the_code_defines() -> None:
    """The bounded sets are keyed by exactly the labels the metric classes declare."""
    domains = label_domains(deploy_settings(DEMO_CONFIG))
    code = code_metrics()
    assert set(domains) == METRIC_CATALOGUE | {UP}
    assert set(code) >= METRIC_CATALOGUE, sorted(METRIC_CATALOGUE - set(code))
    for metric in sorted(METRIC_CATALOGUE):
        assert set(domains[metric]) == code[metric].labels, metric
        assert all(domains[metric].values()), f"{metric}: an empty set of values"
    # A metric outside the catalogue (one being added) must still use known labels only.
    for metric, found in code.items():
        for label in found.labels:
            assert allowed_values(domains, metric, label) is not None, (metric, label)


def test_every_gateway_answer_has_a_counted_outcome() -> None:
    """`ANSWERS` is the one table of answers; each outcome's series exists from the start
    (GatewayMetrics pre-creates OUTCOMES), or counting that answer would raise KeyError."""
    from gateway.endpoint import ANSWERS
    from gateway.metrics import OUTCOMES

    answered = {answer.outcome for answer in ANSWERS.values()}
    assert answered <= set(OUTCOMES), sorted(answered - set(OUTCOMES))
    domain = label_domains(deploy_settings(DEMO_CONFIG))["webhook_bridge_gateway_requests_total"]
    assert answered <= domain["outcome"]


@pytest.mark.parametrize("config", DEPLOY_CONFIGS)
def test_alert_and_dashboard_matchers_use_values_the_code_produces(config: Path) -> None:
    domains = label_domains(deploy_settings(config))
    dashboard = load_dashboard()
    variables = dashboard_variables(dashboard)
    assert variables, "the dashboard has no label_values() variable: the extraction is broken"
    problems = variable_problems(variables, domains)
    for rule in alert_rules():
        problems += [f"{rule['alert']}: {p}" for p in matcher_problems(rule["expr"], domains)]
    for query in dashboard_queries(dashboard):
        problems += [f"dashboard: {p}" for p in matcher_problems(query, domains, variables)]
    assert problems == []


def test_matchers_are_found_in_alerts_and_dashboard() -> None:
    """Guards the check above against an extraction that finds nothing."""
    in_alerts = {
        (m.metric, m.label, m.op, m.value)
        for rule in alert_rules()
        for m in promql_matchers(rule["expr"])
    }
    assert ("webhook_bridge_gateway_requests_total", "outcome", "=", "unavailable") in in_alerts
    assert ("webhook_bridge_stage_forwarded_total", "stage", "=", "reorderer") in in_alerts
    in_dashboard = [m for q in dashboard_queries(load_dashboard()) for m in promql_matchers(q)]
    assert any(m.op == "=~" and m.value == "$sink" for m in in_dashboard)


@pytest.mark.parametrize(
    ("expr", "wrong"),
    [
        ('webhook_bridge_gateway_requests_total{outcome="unavailabe"}', "not a value"),
        ('webhook_bridge_gateway_requests_total{outcome="internal-error"}', "not a value"),
        ('webhook_bridge_gateway_requests_total{source!="unknown"}', "not a value"),
        ('webhook_bridge_stage_forwarded_total{stage=~"reorder"}', "matches no value"),
        ('webhook_bridge_fanout_dead_lettered_total{reason="bad_signature"}', "not a value"),
        ('webhook_bridge_gateway_verified_total{mode="hmac-reserialized"}', "not a value"),
        ('webhook_bridge_gateway_requests_total{sorce="fintoc"}', "has no label"),
        ('webhook_bridge_gateway_requests_total{outcome=~"(unclosed"}', "bad regex"),
        ('webhook_bridge_fanout_in_flight{sink=~"$source"}', "holds"),
        ('webhook_bridge_fanout_in_flight{sink="$sink"}', "needs =~"),
        ('webhook_bridge_fanout_in_flight{sink=~"$nope"}', "not a label_values() variable"),
        ('up{job="gateway"}', "has no label"),
        ('webhook_bridge_nothing_total{source="fintoc"}', "no known label values"),
        ('webhook_bridge_gateway_requests_total{outcome~"x"}', "cannot read"),
    ],
)
def test_matcher_check_catches(expr: str, wrong: str) -> None:
    domains = label_domains(deploy_settings(DEMO_CONFIG))
    variables = dashboard_variables(load_dashboard())
    problems = matcher_problems(expr, domains, variables)
    assert len(problems) == 1, problems
    assert wrong in problems[0], problems


def test_matcher_check_accepts_producible_values() -> None:
    domains = label_domains(deploy_settings(DEMO_CONFIG))
    variables = dashboard_variables(load_dashboard())
    for expr in (
        'sum(rate(webhook_bridge_gateway_requests_total{outcome=~"internal_error|unavailable"}[5m]))',
        'webhook_bridge_gateway_requests_total{source="fintoc", outcome!~"accepted|quarantined",}',
        'webhook_bridge_gateway_publish_duration_seconds_bucket{source=~"$source",le="+Inf"}',
        "webhook_bridge_gateway_verified_total{mode='hmac-reserialized-php',key_id=\"\"}",
        'webhook_bridge_fanout_delivered_total{sink=~"${sink}",provider=~"$provider|x"}',
        'webhook_bridge_stage_consumed_total{stage=~"comp.*"}',
    ):
        assert matcher_problems(expr, domains, variables) == [], expr


@pytest.mark.kafka
@pytest.mark.slow
def test_prometheus_scrapes_every_process_and_evaluates_every_rule(
    running: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    """A real Prometheus server (Debian's, from `make tools`) on loopback: every target up,
    every alert rule evaluated against the live series without an error."""
    _, ports = running
    with real_prometheus(tmp_path, {name: ports[name] for name in PROCESSES}, [ALERTS_FILE]) as p:

        def settled() -> bool:
            targets, rules = p.targets(), p.rules()
            evaluated = rules and all(
                not str(r.get("lastEvaluation", "")).startswith("0001") for r in rules
            )
            return bool(evaluated) and all(t["health"] == "up" for t in targets)

        with contextlib.suppress(AssertionError):  # the assertions below say what is wrong
            p.wait_for(settled, 60, "every target up and every rule evaluated")
        targets, rules = p.targets(), p.rules()
        assert sorted(str(t["health"]) for t in targets) == ["up"] * len(PROCESSES), targets
        assert rules, "Prometheus loaded no rules"
        broken = {
            str(r["name"]): r.get("lastError")
            for r in rules
            if r.get("health") != "ok" or r.get("lastError")
        }
        assert broken == {}, broken
