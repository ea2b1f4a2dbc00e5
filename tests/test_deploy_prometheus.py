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
    RUNBOOK_BASE,
    alert_expressions,
    alert_rules,
    code_metrics,
    dashboard_queries,
    find_tool,
    github_anchor,
    load_dashboard,
    load_yaml,
    load_yaml_docs,
    metric_names_in,
    metric_names_used,
    render_prometheusrule,
    require_tool,
    runbook_sections,
)

SEVERITIES = {"critical", "warning", "info"}
COMPONENTS = {"gateway", "compactor", "reorderer", "fanout"}
# An alert's `component`: a process, Kafka, or the series' own stage/component label.
RULE_COMPONENTS = COMPONENTS | {"kafka", "{{ $labels.stage }}", "{{ $labels.component }}"}
MAX_WINDOW_S = 300  # every range clears within 5 minutes after its cause stops
LONG_WINDOW_ALERTS = {"WebhookBridgeSourceSilent"}  # clears at the first event instead


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
        assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
        for key in ("summary", "description"):
            assert str(annotations[key]).strip(), f"{rule['alert']}: no {key}"
        labels = rule.get("labels", {})
        assert labels.get("severity") in SEVERITIES, rule["alert"]
        assert labels.get("service") == "webhook-bridge", rule["alert"]
        assert labels.get("component") in RULE_COMPONENTS, rule["alert"]


def test_every_runbook_url_points_at_its_own_section() -> None:
    """One section per alert in docs/operations.md, and one alert per alert-named section,
    each saying what it means, what to check and what to do."""
    sections = runbook_sections()
    anchors = {github_anchor(heading): heading for heading in sections}
    names = {str(rule["alert"]) for rule in alert_rules()}
    for rule in alert_rules():
        url = str(rule["annotations"]["runbook_url"])
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_BASE, url
        assert anchors.get(anchor) == rule["alert"], f"{rule['alert']}: {url} names no section"
        text = sections[rule["alert"]]
        for part in ("**What it means.**", "**What to check.**", "**What to do.**"):
            assert part in text, f"{rule['alert']}: its section lacks {part}"
    documented = {h for h in sections if h.startswith("WebhookBridge")}
    assert documented == names, f"sections without an alert: {sorted(documented - names)}"


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration))


def test_every_window_clears_within_five_minutes() -> None:
    for rule in alert_rules():
        windows = re.findall(r"\[(\d+[smhd])(?::\d+[smhd])?\]", str(rule["expr"]))
        if rule["alert"] in LONG_WINDOW_ALERTS:
            assert windows, rule["alert"]
            continue
        too_long = [w for w in windows if _seconds(w) > MAX_WINDOW_S]
        assert too_long == [], f"{rule['alert']}: windows {too_long} outlive their cause"


def _quantile_thresholds() -> list[tuple[str, str, float]]:
    """(alert, histogram, threshold) of every `histogram_quantile(...) > number`."""
    found = []
    pattern = re.compile(
        r"histogram_quantile\(.*?(webhook_bridge_\w+)_bucket.*\)\s*>\s*([0-9.]+)\s*$", re.S
    )
    for rule in alert_rules():
        match = pattern.search(str(rule["expr"]).strip())
        if match is not None:
            found.append((str(rule["alert"]), match.group(1), float(match.group(2))))
    return found


def test_histogram_buckets_resolve_the_alert_thresholds() -> None:
    """A quantile threshold is a bucket bound, and the bucket below it is at most 10% of it
    wide: a value just under the threshold cannot read as over it (70 s used to read as
    p99 293 s with buckets 60 and 300)."""
    thresholds = _quantile_thresholds()
    assert (
        "WebhookBridgeFanoutEventAgeHigh",
        "webhook_bridge_fanout_event_age_seconds",
        300.0,
    ) in (thresholds)
    code = code_metrics()
    for alert, metric, threshold in thresholds:
        if metric not in code or not code[metric].buckets:
            continue  # a threshold that is a series (the gateway deadline), not a number
        bounds = sorted(float(b) for b in code[metric].buckets if b != "+Inf")
        assert threshold in bounds, f"{alert}: {threshold} is not a bucket bound of {metric}"
        below = max(b for b in bounds if b < threshold)
        assert threshold - below <= 0.1 * threshold, (
            f"{alert}: {metric} buckets {below}, {threshold}"
        )


def histogram_quantile(q: float, bounds: list[float], counts: list[int]) -> float:
    """Prometheus' histogram_quantile over cumulative `counts` per upper bound."""
    rank = q * counts[-1]
    for i, (bound, count) in enumerate(zip(bounds, counts, strict=True)):
        if count >= rank:
            lower = bounds[i - 1] if i else 0.0
            below = counts[i - 1] if i else 0
            return lower + (bound - lower) * (rank - below) / (count - below)
    return bounds[-1]


@pytest.mark.parametrize("age_s", [70.0, 140.0, 280.0, 295.0, 305.0, 320.0])
def test_event_age_p99_reads_close_to_the_truth(age_s: float) -> None:
    from prometheus_client import CollectorRegistry

    from consumers.fanout.metrics import FanoutMetrics

    registry = CollectorRegistry()
    metrics = FanoutMetrics(registry)
    for _ in range(100):
        metrics.age.labels("hook").observe(age_s)
    samples = [
        (float(s.labels["le"]), int(s.value))
        for family in registry.collect()
        for s in family.samples
        if s.name == "webhook_bridge_fanout_event_age_seconds_bucket" and s.labels["le"] != "+Inf"
    ]
    bounds, counts = zip(*sorted(samples), strict=True)
    p99 = histogram_quantile(0.99, list(bounds), list(counts))
    assert abs(p99 - age_s) <= 0.25 * age_s, (age_s, p99)
    assert (p99 > 300) == (age_s > 300), "the alert threshold separates the two sides"


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


def test_alerts_clear_within_five_minutes_after_the_cause_stops(
    promtool: str, tmp_path: Path
) -> None:
    """The two alerts that kept firing 8-9 minutes after their cause: promtool feeds them a
    cause for 20 minutes (firing, checked by the alert's state below) and then none; 5
    minutes after the last failure neither is active any more."""
    source, sink = "acme", "hook"
    dead = f'webhook_bridge_fanout_dead_lettered_total{{sink="{sink}",reason="rejected"}}'
    failures = (
        f'webhook_bridge_gateway_verification_failures_total{{source="{source}",'
        'reason="bad_signature"}'
    )
    requests = f'webhook_bridge_gateway_requests_total{{source="{source}",outcome="accepted"}}'
    unauthorized = (
        f'webhook_bridge_gateway_requests_total{{source="{source}",outcome="unauthorized"}}'
    )
    # One sample a minute: 20 minutes of cause, then 15 without (counters stay flat).
    series = [
        {"series": dead, "values": "0+10x20 200x15"},
        {"series": failures, "values": "0+600x20 12000x15"},
        {"series": unauthorized, "values": "0+600x20 12000x15"},
        {"series": requests, "values": "0+600x35"},
    ]
    names = ("WebhookBridgeDeadLetters", "WebhookBridgeVerificationFailureSpike")

    def promtool_test(minutes: tuple[int, ...]) -> subprocess.CompletedProcess[str]:
        """Expect no alert of `names` at each of `minutes`."""
        checks = [
            {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": []}
            for name in names
            for minute in minutes
        ]
        tests = {
            "rule_files": [str(ALERTS_FILE)],
            "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
        }
        path = tmp_path / "clearing_test.yml"
        path.write_text(yaml.safe_dump(tests))
        return run(promtool, "test", "rules", str(path))

    result = promtool_test((25, 30))
    assert result.returncode == 0, result.stdout + result.stderr
    # The same series while the cause lasts: both alerts are active (a wrong series name
    # would make the check above pass vacuously).
    result = promtool_test((19,))
    assert result.returncode != 0
    for name in names:
        assert f"alertname: {name}" in result.stdout + result.stderr, result.stdout
