"""Helpers for the deploy tests: file paths, metric names used, tool discovery, renderers.

``metric_names_used()`` is the list the process-level drift test checks against what
the real processes expose: it is read from the files (alert expressions and dashboard
queries), never maintained by hand.

Run as a module to regenerate the derived Kubernetes manifests::

    python -m tests.deploy_support prometheusrule > deploy/k8s/prometheusrule.yaml
    python -m tests.deploy_support kafkatopics > deploy/k8s/strimzi/kafkatopics.yaml
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
COMPOSE_CONFIG = COMPOSE_DIR / "config.toml"
K8S_DIR = DEPLOY / "k8s"
K8S_CONFIG = K8S_DIR / "config.toml"
STRIMZI_DIR = K8S_DIR / "strimzi"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTS_FILE = PROMETHEUS_DIR / "alerts.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "webhook-bridge.json"
DEMO_CONFIG = DEPLOY / "demo.toml"

# The metric catalogue the processes promise (README "Metrics"); histograms by base name.
METRIC_CATALOGUE = frozenset(
    {
        "webhook_bridge_gateway_requests_total",
        "webhook_bridge_gateway_verification_failures_total",
        "webhook_bridge_gateway_verified_total",
        "webhook_bridge_gateway_publish_duration_seconds",
        "webhook_bridge_gateway_request_duration_seconds",
        "webhook_bridge_gateway_deadline_seconds",
        "webhook_bridge_gateway_in_flight_requests",
        "webhook_bridge_gateway_producer_queue_messages",
        "webhook_bridge_gateway_delivery_errors_total",
        "webhook_bridge_gateway_producer_rebuilds_total",
        "webhook_bridge_gateway_body_size_bytes",
        "webhook_bridge_stage_consumed_total",
        "webhook_bridge_stage_forwarded_total",
        "webhook_bridge_stage_quarantined_total",
        "webhook_bridge_stage_transaction_duration_seconds",
        "webhook_bridge_stage_transactions_aborted_total",
        "webhook_bridge_stage_rebalances_total",
        "webhook_bridge_stage_consumer_lag_messages",
        "webhook_bridge_compactor_duplicates_dropped_total",
        "webhook_bridge_compactor_remembered_ids",
        "webhook_bridge_reorderer_late_events_total",
        "webhook_bridge_reorderer_lateness_seconds",
        "webhook_bridge_reorderer_buffered_events",
        "webhook_bridge_reorderer_oldest_buffered_age_seconds",
        "webhook_bridge_fanout_delivered_total",
        "webhook_bridge_fanout_retries_total",
        "webhook_bridge_fanout_dead_lettered_total",
        "webhook_bridge_fanout_delivery_duration_seconds",
        "webhook_bridge_fanout_event_age_seconds",
        "webhook_bridge_fanout_in_flight",
        "webhook_bridge_fanout_breaker_open",
    }
)

_METRIC_RE = re.compile(r"webhook_bridge_[a-z_]+")
_HISTOGRAM_SUFFIX_RE = re.compile(r"_(bucket|sum|count)$")

# A value every secret parser accepts: >= 16 characters, and base64 after
# "whsec_" (Standard Webhooks decodes it).
DUMMY_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
_ENV_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


# --------------------------------------------------------------------------- files


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a (multi-document) YAML file."""
    docs = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return [doc for doc in docs if doc]


def load_dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/alerts.yml, in file order."""
    groups = load_yaml(ALERTS_FILE)["groups"]
    return [rule for group in groups for rule in group["rules"]]


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including panels nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[str]:
    """PromQL of every panel target and every query variable."""
    queries = [
        str(target["expr"])
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            queries.append(str(query["query"] if isinstance(query, dict) else query))
    return queries


def alert_expressions() -> list[str]:
    return [str(rule["expr"]) for rule in alert_rules()]


def metric_names_in(texts: list[str]) -> set[str]:
    """webhook_bridge_* names in PromQL texts, histogram suffixes folded to the base name."""
    return {
        _HISTOGRAM_SUFFIX_RE.sub("", name) for text in texts for name in _METRIC_RE.findall(text)
    }


def metric_names_used() -> list[str]:
    """Every webhook_bridge_* metric the alerts and the dashboard query, sorted."""
    texts = alert_expressions() + dashboard_queries(load_dashboard())
    return sorted(metric_names_in(texts))


# --------------------------------------------------------------------------- config


def secret_env_names(config_path: Path) -> list[str]:
    """Environment-variable names a config refers to (secrets, static headers, sink secrets).

    Any upper-case string value under [sources] or [sinks] is such a name.
    """
    raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, str) and _ENV_NAME_RE.match(value):
            found.add(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(raw.get("sources", {}))
    walk(raw.get("sinks", {}))
    return sorted(found)


def dummy_env(config_path: Path) -> dict[str, str]:
    """A clean environment (no BRIDGE_* twins) with a dummy value for every secret."""
    return dict.fromkeys(secret_env_names(config_path), DUMMY_SECRET)


# --------------------------------------------------------------------------- tools


def find_tool(name: str) -> str | None:
    """A tool on PATH, or installed next to this interpreter (`make tools` puts them there)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def compose_spec_path() -> Path | None:
    """The Compose Specification JSON schema `make tools` extracts, if present."""
    override = os.environ.get("BRIDGE_COMPOSE_SPEC")
    candidates = [Path(override)] if override else []
    candidates.append(Path(sys.prefix) / "share" / "compose-spec" / "compose_spec.json")
    for candidate in candidates:
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    return None


def require_tool(what: str, found: object | None, env_var: str) -> None:
    """Skip with the reason when a tool is missing, unless env_var says it must be there."""
    if found is not None:
        return
    message = f"{what} not found; `make tools` installs it"
    if os.environ.get(env_var):
        pytest.fail(f"{message} ({env_var} is set, so it is required)")
    pytest.skip(f"{message} (set {env_var}=1 to make its absence a failure)")


# --------------------------------------------------------------------------- renderers


def render_prometheusrule() -> str:
    """deploy/k8s/prometheusrule.yaml, from deploy/prometheus/alerts.yml."""
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "webhook-bridge",
            "labels": {
                "app.kubernetes.io/name": "webhook-bridge",
                "app.kubernetes.io/part-of": "webhook-bridge",
            },
        },
        "spec": {"groups": load_yaml(ALERTS_FILE)["groups"]},
    }
    header = (
        "# Generated from deploy/prometheus/alerts.yml (edit that file, then regenerate with\n"
        "#   python -m tests.deploy_support prometheusrule > deploy/k8s/prometheusrule.yaml\n"
        "# ); tests/test_deploy_prometheus.py fails when the two differ.\n"
    )
    return header + yaml.safe_dump(rule, sort_keys=False, width=100)


def render_kafkatopics(cluster: str = "my-cluster") -> str:
    """deploy/k8s/strimzi/kafkatopics.yaml, from the topics deploy/k8s/config.toml implies."""
    from gateway.config import load
    from gateway.topics import implied_topics

    settings = load(K8S_CONFIG, env=dummy_env(K8S_CONFIG))
    docs = []
    for spec in implied_topics(settings):
        config: dict[str, int | str] = {
            key: int(value) if value.isdigit() else value for key, value in spec.config.items()
        }
        docs.append(
            {
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaTopic",
                "metadata": {
                    "name": spec.name,
                    "labels": {
                        "strimzi.io/cluster": cluster,
                        "app.kubernetes.io/part-of": "webhook-bridge",
                    },
                },
                "spec": {
                    "topicName": spec.name,
                    "partitions": spec.partitions,
                    "replicas": spec.replication_factor,
                    "config": config,
                },
            }
        )
    header = (
        "# Generated from the topics deploy/k8s/config.toml implies "
        "(gateway.topics.implied_topics):\n"
        "#   python -m tests.deploy_support kafkatopics > deploy/k8s/strimzi/kafkatopics.yaml\n"
        "# tests/test_deploy_k8s.py fails when they drift. 12 partitions everywhere: the\n"
        "# state topics are co-partitioned with the topics they track, and\n"
        "# `webhook-bridge topics` checks every count against [topics] partitions.\n"
        "# min.insync.replicas 2 with 3 replicas: acks=all survives one broker down.\n"
    )
    return header + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)


def main(argv: list[str]) -> int:
    renderers = {"prometheusrule": render_prometheusrule, "kafkatopics": render_kafkatopics}
    if len(argv) != 1 or argv[0] not in renderers:
        print(f"usage: python -m tests.deploy_support {{{','.join(renderers)}}}", file=sys.stderr)
        return 2
    sys.stdout.write(renderers[argv[0]]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
