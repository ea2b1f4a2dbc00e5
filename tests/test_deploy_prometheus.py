"""deploy/prometheus: alert rules and the compose Prometheus config.

promtool (from `make tools`) checks the rules, the config, and that every dashboard
query parses as PromQL; without it those tests are skipped with the reason, or fail
when WB_TEST_REQUIRE_PROMTOOL is set.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy_support import (
    ALERTS_FILE,
    K8S_DIR,
    METRIC_CATALOGUE,
    PROMETHEUS_CONFIG,
    alert_expressions,
    alert_rules,
    dashboard_queries,
    find_tool,
    load_dashboard,
    load_yaml,
    load_yaml_docs,
    metric_names_in,
    metric_names_used,
    render_prometheusrule,
    require_tool,
)

SEVERITIES = {"critical", "warning", "info"}
COMPONENTS = {"gateway", "compactor", "reorderer", "fanout"}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = find_tool("promtool")
    require_tool("promtool", found, "WB_TEST_REQUIRE_PROMTOOL")
    assert found is not None
    return found


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, cwd=cwd)


def test_promtool_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(ALERTS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_parse_as_promql(promtool: str, tmp_path: Path) -> None:
    # Grafana's variables are not PromQL: give them values, then let promtool
    # parse every query as a recording rule.
    def concrete(query: str) -> str:
        query = query.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        query = re.sub(r"label_values\((\w+), *\w+\)", r"\1", query)
        return re.sub(r"\$\{?\w+\}?", "x", query)

    rules = [
        {"record": f"dashboard:query_{i}", "expr": concrete(q)}
        for i, q in enumerate(dashboard_queries(load_dashboard()))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_documented() -> None:
    rules = alert_rules()
    assert len(rules) >= 10
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in rules:
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: no {key}"
        assert "\n" not in str(annotations["runbook"]).strip(), (
            f"{rule['alert']}: runbook is one line"
        )
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]


def test_alerts_cover_the_promised_conditions() -> None:
    used = metric_names_in(alert_expressions())
    for metric in (
        "webhook_bridge_gateway_requests_total",
        "webhook_bridge_gateway_verification_failures_total",
        "webhook_bridge_gateway_publish_duration_seconds",
        "webhook_bridge_gateway_deadline_seconds",
        "webhook_bridge_gateway_delivery_errors_total",
        "webhook_bridge_gateway_producer_rebuilds_total",
        "webhook_bridge_stage_consumer_lag_messages",
        "webhook_bridge_reorderer_oldest_buffered_age_seconds",
        "webhook_bridge_reorderer_late_events_total",
        "webhook_bridge_fanout_dead_lettered_total",
        "webhook_bridge_fanout_breaker_open",
    ):
        assert metric in used, f"no alert on {metric}"
    assert any(re.search(r"\bup\{", expr) for expr in alert_expressions()), "no process-down alert"


def test_only_catalogue_metrics_are_used() -> None:
    used = set(metric_names_used())
    assert used, "found no metric names: the extraction is broken"
    assert used <= METRIC_CATALOGUE, f"not in the catalogue: {sorted(used - METRIC_CATALOGUE)}"


def test_histograms_are_queried_through_buckets() -> None:
    histograms = {name for name in METRIC_CATALOGUE if name.endswith(("_seconds", "_bytes"))}
    histograms -= {
        "webhook_bridge_gateway_deadline_seconds",
        "webhook_bridge_reorderer_oldest_buffered_age_seconds",
    }  # gauges
    texts = alert_expressions() + dashboard_queries(load_dashboard())
    for text in texts:
        for name in re.findall(r"webhook_bridge_[a-z_]+", text):
            assert name not in histograms, f"histogram {name} queried without _bucket/_sum/_count"


def test_component_label_matches_scrape_config() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["alerts.yml"]
    components = {
        static["labels"]["component"]
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        if "component" in static.get("labels", {})
    }
    assert components == COMPONENTS


def test_prometheusrule_mirrors_alerts_yml() -> None:
    path = K8S_DIR / "prometheusrule.yaml"
    (rule,) = load_yaml_docs(path)
    assert rule["kind"] == "PrometheusRule"
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == load_yaml(ALERTS_FILE)["groups"], (
        "deploy/k8s/prometheusrule.yaml is stale: "
        "python -m tests.deploy_support prometheusrule > deploy/k8s/prometheusrule.yaml"
    )
    assert path.read_text(encoding="utf-8") == render_prometheusrule()
