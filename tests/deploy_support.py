"""Helpers for the deploy tests: file paths, metric names used, tool discovery, renderers.

``metric_names_used()`` is the list the process-level drift test checks against what
the real processes expose: it is read from the files (alert expressions and dashboard
queries), never maintained by hand. ``label_domains(settings)`` is every value each
label of each metric can take, built from the code's own constants and the config;
``matcher_problems()`` checks the label matchers of a PromQL text against it.

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
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from schemas.config import Settings

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
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
# Where alerts.yml points runbook_url (an anchor per alert); docs/operations.md says how
# to point it at your own copy ("Runbook links", a tested sed line).
RUNBOOK_BASE = "https://github.com/your-org/webhook-bridge/blob/main/docs/operations.md"

# The metric catalogue the processes promise (docs/metrics.md); histograms by base name.
METRIC_CATALOGUE = frozenset(
    {
        "webhook_bridge_gateway_requests_total",
        "webhook_bridge_fanout_consumer_lag_messages",
        "webhook_bridge_stage_commit_duration_seconds",
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
        "webhook_bridge_gateway_selector_fallbacks_total",
        "webhook_bridge_gateway_missing_topics",
        "webhook_bridge_broker_reachable",
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
_SCRAPED_SUFFIX_RE = re.compile(r"_(bucket|sum|count|created)$")

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


def runbook_sections() -> dict[str, str]:
    """docs/operations.md: {"## " heading: its text up to the next "## " heading}."""
    sections: dict[str, str] = {}
    heading: str | None = None
    for line in OPERATIONS_DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            sections[heading] = ""
        elif heading is not None:
            sections[heading] += line + "\n"
    return sections


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (lower case, punctuation dropped)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


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


# --------------------------------------------------------------------------- label values

# Prometheus' own per-target series: its labels come from the scrape config, not the code.
UP = "up"


def catalogue_metric(sample_name: str) -> str | None:
    """The catalogue metric a scraped sample belongs to (``_bucket``/``_sum``/``_count``/
    ``_created`` folded to the histogram or counter), or None for a name outside it."""
    if sample_name in METRIC_CATALOGUE:
        return sample_name
    base = _SCRAPED_SUFFIX_RE.sub("", sample_name)
    for name in (base, f"{base}_total"):
        if name in METRIC_CATALOGUE:
            return name
    return None


def metric_of(sample_name: str) -> str:
    """`catalogue_metric()`, or for a metric outside the catalogue its name without the
    histogram suffixes."""
    return catalogue_metric(sample_name) or _SCRAPED_SUFFIX_RE.sub("", sample_name)


@dataclass(frozen=True)
class CodeMetric:
    labels: frozenset[str]  # label names, without le
    buckets: frozenset[str]  # the le values of a histogram, else empty


@cache
def code_metrics() -> Mapping[str, CodeMetric]:
    """`metric_of()` name -> its label names and ``le`` values, read from the metric classes
    themselves: each is built in a scratch registry with one child per label set."""
    from prometheus_client import CollectorRegistry

    from consumers.fanout.metrics import FanoutMetrics
    from consumers.metrics import CompactorMetrics, ReordererMetrics, StageMetrics
    from gateway.metrics import GatewayMetrics
    from schemas.process import broker_reachable_gauge

    registry = CollectorRegistry()
    GatewayMetrics([("source", 1.0)], registry, verified=[("source", "scheme", "key_id", "mode")])
    broker_reachable_gauge(registry, "process", lambda: True)
    StageMetrics("stage", ["provider"], registry)
    CompactorMetrics(["provider"], registry)
    ReordererMetrics(["provider"], registry)
    FanoutMetrics(registry).init_sinks(["sink"], ["provider"])
    labels: dict[str, set[str]] = {}
    buckets: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            name = metric_of(sample.name)
            labels.setdefault(name, set()).update(k for k in sample.labels if k != "le")
            if "le" in sample.labels:
                buckets.setdefault(name, set()).add(sample.labels["le"])
    return {
        name: CodeMetric(frozenset(names), frozenset(buckets.get(name, ())))
        for name, names in labels.items()
    }


def client_default_label_domains() -> dict[str, dict[str, frozenset[str]]]:
    """metric -> label -> values of prometheus_client's default collectors (process, platform,
    gc), which a process serving the global REGISTRY exposes too; read from the collectors."""
    from prometheus_client import (
        CollectorRegistry,
        GCCollector,
        PlatformCollector,
        ProcessCollector,
    )

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    found: dict[str, dict[str, set[str]]] = {}
    for family in registry.collect():
        for sample in family.samples:
            labels = found.setdefault(metric_of(sample.name), {})
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    return {
        metric: {key: frozenset(values) for key, values in labels.items()}
        for metric, labels in found.items()
    }


def scrape_components() -> frozenset[str]:
    """The ``component`` target label the compose Prometheus gives each process."""
    config = load_yaml(PROMETHEUS_CONFIG)
    return frozenset(
        str(static["labels"]["component"])
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        if "component" in static.get("labels", {})
    )


def label_domains(settings: Settings) -> dict[str, dict[str, frozenset[str]]]:
    """metric -> label -> every value the code gives that label under `settings`.

    Built from the code's own tables (gateway ANSWERS and OUTCOMES, verification REASONS,
    DELIVERY_ERRORS and PUBLISH_OUTCOMES, the normalised FIELDS, QUARANTINE_REASONS,
    DLQ_REASONS, the stage names, what each configured verifier reports) and the
    configured sources, providers and sinks, never
    from copied literals. Every
    metric of METRIC_CATALOGUE is a key, plus ``up`` (component from the scrape config).
    """
    from consumers import compactor, reorderer
    from consumers.fanout.metrics import DLQ_REASONS
    from consumers.metrics import PROCESSES, QUARANTINE_REASONS
    from gateway.endpoint import ANSWERS
    from gateway.metrics import (
        DELIVERY_ERRORS,
        OUTCOMES,
        PUBLISH_OUTCOMES,
        UNKNOWN_SOURCE,
        verified_labels,
    )
    from gateway.normalize import FIELDS
    from gateway.sources import build_verifiers
    from gateway.verify.base import REASONS

    configured = frozenset(settings.sources)
    # An unknown path is counted as _unknown in the answers it gets (404) only.
    source = configured | {UNKNOWN_SOURCE}
    provider = frozenset(settings.providers)
    sink = frozenset(settings.sinks)
    stage = frozenset({compactor.STAGE, reorderer.STAGE})
    outcome = frozenset({*OUTCOMES, *(answer.outcome for answer in ANSWERS.values())})
    verifiers = build_verifiers(settings)
    reported = [
        labels
        for src in settings.sources.values()
        for labels in verified_labels(src, verifiers[src.name])
    ]
    verified = {
        "source": configured,  # an unknown source never verifies
        "scheme": frozenset(scheme for scheme, _, _ in reported),
        "key_id": frozenset(key_id for _, key_id, _ in reported),
        "mode": frozenset(mode for _, _, mode in reported),
    }
    g, s, f = "webhook_bridge_gateway", "webhook_bridge_stage", "webhook_bridge_fanout"
    by_source = {"source": configured}
    by_stage = {"stage": stage}
    by_stage_provider = {"stage": stage, "provider": provider}
    by_provider = {"provider": provider}
    by_sink = {"sink": sink}
    return {
        f"{g}_requests_total": {"source": source, "outcome": outcome},
        f"{g}_verification_failures_total": {"source": source, "reason": frozenset(REASONS)},
        f"{g}_verified_total": verified,
        f"{g}_publish_duration_seconds": {
            "source": configured,
            "outcome": frozenset(PUBLISH_OUTCOMES),
        },
        f"{g}_request_duration_seconds": by_source,
        f"{g}_deadline_seconds": by_source,
        f"{g}_in_flight_requests": {},
        f"{g}_producer_queue_messages": {},
        f"{g}_delivery_errors_total": {"source": configured, "reason": frozenset(DELIVERY_ERRORS)},
        f"{g}_producer_rebuilds_total": {},
        f"{g}_missing_topics": {},
        f"{g}_body_size_bytes": by_source,
        f"{g}_selector_fallbacks_total": {"source": configured, "field": frozenset(FIELDS)},
        f"{s}_consumed_total": by_stage_provider,
        f"{s}_forwarded_total": by_stage_provider,
        f"{s}_quarantined_total": {"stage": stage, "reason": frozenset(QUARANTINE_REASONS)},
        f"{s}_transaction_duration_seconds": by_stage,
        f"{s}_commit_duration_seconds": by_stage,
        f"{s}_transactions_aborted_total": by_stage,
        f"{s}_rebalances_total": by_stage,
        f"{s}_consumer_lag_messages": by_stage_provider,
        "webhook_bridge_compactor_duplicates_dropped_total": by_provider,
        "webhook_bridge_compactor_remembered_ids": by_provider,
        "webhook_bridge_reorderer_late_events_total": by_provider,
        "webhook_bridge_reorderer_lateness_seconds": by_provider,
        "webhook_bridge_reorderer_buffered_events": by_provider,
        "webhook_bridge_reorderer_oldest_buffered_age_seconds": by_provider,
        f"{f}_delivered_total": {"sink": sink, "provider": provider},
        f"{f}_retries_total": by_sink,
        f"{f}_dead_lettered_total": {"sink": sink, "reason": frozenset(DLQ_REASONS)},
        f"{f}_delivery_duration_seconds": by_sink,
        f"{f}_event_age_seconds": by_sink,
        f"{f}_in_flight": by_sink,
        f"{f}_consumer_lag_messages": by_sink,
        f"{f}_breaker_open": by_sink,
        # the gateway exposes the same gauge with process="gateway"
        "webhook_bridge_broker_reachable": {"process": frozenset({"gateway", *PROCESSES})},
        UP: {"component": scrape_components()},
    }


def allowed_values(
    domains: Mapping[str, Mapping[str, frozenset[str]]], metric: str, label: str
) -> frozenset[str] | None:
    """The values `label` of `metric` can take; for a metric outside `domains` (a new one),
    that label's values over every known metric. None: no bounded set is known."""
    if metric in domains:
        return domains[metric].get(label)
    sets = [labels[label] for labels in domains.values() if label in labels]
    return frozenset().union(*sets) if sets else None


# --------------------------------------------------------------------------- PromQL matchers

_STRING = r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"""
# metric{...} or {...}; not Grafana's ${var}, not the middle of a name
_SELECTOR_RE = re.compile(rf"""(?<![\w:$])([a-zA-Z_:][\w:]*)?\s*\{{((?:{_STRING}|[^{{}}"'])*)\}}""")
_MATCHER_RE = re.compile(rf"\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*({_STRING})\s*(?:,|$)")
_GRAFANA_VAR_RE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
_LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)\s*$")


@dataclass(frozen=True)
class Matcher:
    """One ``label op "value"`` of a selector; `metric` is "" for a selector without a name."""

    metric: str
    label: str
    op: str
    value: str
    selector: str


def promql_matchers(text: str) -> list[Matcher]:
    """Every label matcher of every selector in a PromQL text (ValueError if one is unreadable)."""
    found: list[Matcher] = []
    for selector in _SELECTOR_RE.finditer(text):
        metric, body = selector.group(1) or "", selector.group(2).strip()
        pos = 0
        while pos < len(body):
            match = _MATCHER_RE.match(body, pos)
            if match is None:
                raise ValueError(f"cannot read the matchers of {selector.group(0)!r}")
            label, op, quoted = match.groups()
            value = re.sub(r"\\(.)", r"\1", quoted[1:-1])
            found.append(Matcher(metric, label, op, value, selector.group(0)))
            pos = match.end()
    return found


def dashboard_variables(dashboard: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Grafana query variable -> (metric, label) of its ``label_values(metric, label)``."""
    found: dict[str, tuple[str, str]] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]
        match = _LABEL_VALUES_RE.match(str(query["query"] if isinstance(query, dict) else query))
        if match is not None:
            found[str(var["name"])] = (match.group(1), match.group(2))
    return found


def _bucket_spellings(buckets: frozenset[str]) -> frozenset[str]:
    """``le`` as the client exposes it ("1.0") and as Prometheus 3 normalises it ("1")."""
    return buckets | {b.removesuffix(".0") for b in buckets}


def _matches_some(regex: str, values: frozenset[str]) -> bool:
    pattern = re.compile(regex)  # PromQL regexes are anchored at both ends
    return any(pattern.fullmatch(value) for value in values)


def matcher_problems(
    text: str,
    domains: Mapping[str, Mapping[str, frozenset[str]]],
    variables: Mapping[str, tuple[str, str]] | None = None,
) -> list[str]:
    """What is wrong with the label matchers of a PromQL text, given `label_domains()`.

    ``=``/``!=`` must name a value the code produces for that metric's label (a ``!=`` on
    a value that never occurs excludes nothing: a typo); ``=~``/``!~`` must match at least
    one. A value that is exactly a Grafana variable must be a ``label_values()`` variable of
    the same label that shares a value with this metric's label; other variables stand
    for ``.*`` and need a regex operator (they may be multi-valued).
    """
    variables = variables or {}
    try:
        matchers = promql_matchers(text)
    except ValueError as exc:
        return [str(exc)]
    problems: list[str] = []
    for m in matchers:
        where = f"{m.selector}: {m.label}{m.op}{m.value!r}"
        metric = _HISTOGRAM_SUFFIX_RE.sub("", m.metric)
        if metric not in domains:
            problems.append(f"{where}: no known label values for metric {m.metric or '(none)'!r}")
            continue
        if m.label == "le" and m.metric.endswith("_bucket") and metric in code_metrics():
            allowed = _bucket_spellings(code_metrics()[metric].buckets)
        elif m.label not in domains[metric]:
            problems.append(f"{where}: {m.metric} has no label {m.label!r}")
            continue
        else:
            allowed = domains[metric][m.label]
        whole = _GRAFANA_VAR_RE.fullmatch(m.value)
        if whole is not None:
            name = next(g for g in whole.groups() if g)
            if name not in variables:
                problems.append(f"{where}: ${name} is not a label_values() variable")
                continue
            var_metric, var_label = variables[name]
            shared = domains.get(var_metric, {}).get(var_label, frozenset()) & allowed
            if var_label != m.label or not shared:
                problems.append(f"{where}: ${name} holds {var_metric}'s {var_label!r} values")
            elif m.op not in ("=~", "!~"):
                problems.append(f"{where}: a multi-value variable needs =~ or !~")
            continue
        if _GRAFANA_VAR_RE.search(m.value):
            if m.op not in ("=~", "!~"):
                problems.append(f"{where}: a Grafana variable needs =~ or !~")
                continue
            value = _GRAFANA_VAR_RE.sub(".*", m.value)
        else:
            value = m.value
        if m.op in ("=", "!="):
            if value not in allowed:
                problems.append(f"{where}: not a value of {m.label} ({sorted(allowed)})")
            continue
        try:
            matched = _matches_some(value, allowed)
        except re.error as exc:
            problems.append(f"{where}: bad regex ({exc})")
            continue
        if not matched:
            problems.append(f"{where}: matches no value of {m.label} ({sorted(allowed)})")
    return problems


def variable_problems(
    variables: Mapping[str, tuple[str, str]], domains: Mapping[str, Mapping[str, frozenset[str]]]
) -> list[str]:
    """Grafana ``label_values(metric, label)`` variables over a label the metric lacks."""
    return [
        f"${name}: label_values({metric}, {label}): {metric} has no label {label!r}"
        for name, (metric, label) in variables.items()
        if label not in domains.get(metric, {})
    ]


# --------------------------------------------------------------------------- config


def secret_env_names(
    config_path: Path, sections: tuple[str, ...] = ("sources", "sinks")
) -> list[str]:
    """Environment-variable names a config refers to (secrets, static headers, sink secrets).

    Any upper-case string value under [sources] or [sinks] (or only `sections`) is such a
    name: the providers' under [sources], the sinks' under [sinks].
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

    for section in sections:
        walk(raw.get(section, {}))
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
    override = os.environ.get("WB_TEST_COMPOSE_SPEC")
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
    from schemas.config import load
    from schemas.topics import implied_topics

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
        "(schemas.topics.implied_topics):\n"
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
