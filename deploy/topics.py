"""`webhook-bridge topics`: create and check every topic the config implies.

Names and specs come from ``schemas/topics.py``. Existing topics are checked, not
changed. Errors (the topic cannot be used):
a partition count other than the config's, a changelog with fewer partitions
than its co-partitioned input, a topic that should be compacted and is not.
Warnings: a smaller replication factor, another differing topic config, a
compacted topic the config did not ask to compact, and a broker that could not
describe a topic's configs (then those configs are not checked, and it says so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from schemas.errors import BridgeError
from schemas.topics import (
    CLEANUP_POLICY,
    MAX_MESSAGE_BYTES,
    TopicSpec,
)

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient


class TopicError(BridgeError):
    pass


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class TopicProblem:
    """One difference between a topic on the broker and its spec, as one line."""

    severity: Severity
    topic: str
    text: str

    def __str__(self) -> str:
        return f"topic {self.topic}: {self.text}"


@dataclass
class TopicReport:
    """What `create_and_check_topics` did ({topic: created|exists}) and found."""

    status: dict[str, str] = field(default_factory=dict)
    problems: list[TopicProblem] = field(default_factory=list)

    @property
    def errors(self) -> list[TopicProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[TopicProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    def add(self, severity: Severity, topic: str, text: str) -> None:
        self.problems.append(TopicProblem(severity, topic, text))


_LOGGER = logging.getLogger("webhook_bridge.topics")


def ensure_topics(
    admin_config: dict[str, str],
    specs: Iterable[TopicSpec],
    timeout_s: float = 15.0,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Create missing topics; check all of them. Returns {topic: created|exists}.

    Idempotent: existing topics are never changed. Raises `TopicError` naming every
    error (see the module docstring); warnings go to ``on_warning`` (default: the
    ``webhook_bridge.topics`` logger) and do not stop anything.
    """
    report = create_and_check_topics(admin_config, specs, timeout_s)
    emit = on_warning or _LOGGER.warning
    for problem in report.warnings:
        emit(f"warning: {problem}")
    if report.errors:
        raise TopicError("\nerror: ".join(str(p) for p in report.errors))
    return report.status


def create_and_check_topics(
    admin_config: dict[str, str], specs: Iterable[TopicSpec], timeout_s: float = 15.0
) -> TopicReport:
    """Create the missing topics, then compare every topic with its spec.

    Raises `TopicError` only when the broker cannot be asked or a topic cannot be
    created; differences are returned in the report.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({**admin_config, "log_level": 0})
    specs = list(specs)
    report = TopicReport()
    existing = _list_topics(admin, timeout_s)
    missing: list[TopicSpec] = []
    for spec in specs:
        meta = existing.get(spec.name)
        if meta is None or meta.error is not None:
            missing.append(spec)
        else:
            report.status[spec.name] = "exists"
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(s.name, s.partitions, s.replication_factor, config=s.config)
                for s in missing
            ],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
                report.status[name] = "created"
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    report.status[name] = "exists"
                else:
                    raise TopicError(f"cannot create topic {name}: {err.str()}") from None
        existing = _wait_for_metadata(admin, [s.name for s in missing], timeout_s)
    partitions: dict[str, int] = {
        name: len(meta.partitions) for name, meta in existing.items() if meta.error is None
    }
    checked: list[TopicSpec] = []
    for spec in specs:
        if spec.name not in partitions:
            report.add("warning", spec.name, "not in the broker's metadata yet: not checked")
            continue
        checked.append(spec)
        _check_layout(spec, existing[spec.name], partitions, report)
    configs = _describe_configs(admin, [s.name for s in checked], timeout_s)
    for spec in checked:
        described = configs[spec.name]
        if isinstance(described, str):
            keys = ", ".join(sorted({*spec.config, CLEANUP_POLICY}))
            report.add(
                "warning",
                spec.name,
                f"the broker could not describe its configs ({described}); not checked: {keys}",
            )
        else:
            _check_config(spec, described, report)
    return report


def _list_topics(admin: AdminClient, timeout_s: float) -> dict[str, Any]:
    from confluent_kafka import KafkaException

    try:
        return dict(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise TopicError(f"cannot list topics: {exc.args[0].str()}") from None


def _wait_for_metadata(admin: AdminClient, wanted: list[str], timeout_s: float) -> dict[str, Any]:
    """Metadata once every topic just created is in it (it may lag on a cluster)."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = _list_topics(admin, timeout_s)
        ready = all(
            name in topics and topics[name].error is None and topics[name].partitions
            for name in wanted
        )
        if ready or time.monotonic() >= deadline:
            return topics
        time.sleep(0.2)


def _check_layout(
    spec: TopicSpec, meta: Any, partitions: Mapping[str, int], report: TopicReport
) -> None:
    found = partitions[spec.name]
    source = spec.co_partitioned_with
    if source is not None and source in partitions and found < partitions[source]:
        report.add(
            "error",
            spec.name,
            f"partitions wanted >= {partitions[source]} (co-partitioned with {source}), "
            f"found {found}; state for the extra input partitions would be lost",
        )
    elif found != spec.partitions:
        report.add(
            "error",
            spec.name,
            f"partitions wanted {spec.partitions}, found {found}; partitions are not "
            "changed automatically (it would move keys and break per-key order)",
        )
    # distinct brokers: the embedded broker lists its one id once per requested replica
    replicas = [len(set(p.replicas)) for p in meta.partitions.values()]
    replication = min(replicas) if replicas else 0
    if replication == 0:
        report.add(
            "warning",
            spec.name,
            f"replication factor wanted {spec.replication_factor}, found unknown "
            "(the broker reported no replicas)",
        )
    elif replication < spec.replication_factor:
        report.add(
            "warning",
            spec.name,
            f"replication factor wanted {spec.replication_factor}, found {replication}",
        )


def _describe_configs(
    admin: AdminClient, topics: list[str], timeout_s: float
) -> dict[str, dict[str, Found] | str]:
    """{topic: {key: (value, is a default)}} or {topic: why the broker could not describe it}.

    Apache Kafka reports every key, defaults marked as such; the embedded broker
    returns only the keys set on the topic (a missing key is the broker's default).
    """
    from confluent_kafka import KafkaError, KafkaException

    # the documented public names; the package re-exports them without __all__
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        ConfigResource,
        ResourceType,
    )

    result: dict[str, dict[str, Found] | str] = {}
    pending = list(topics)
    deadline = time.monotonic() + timeout_s
    while pending:
        try:
            futures = admin.describe_configs(
                [ConfigResource(ResourceType.TOPIC, name) for name in pending],
                request_timeout=timeout_s,
            )
        except (KafkaException, ValueError, TypeError) as exc:
            for name in pending:
                result[name] = f"DescribeConfigs failed: {exc}"
            return result
        retry: list[str] = []
        for resource, future in futures.items():
            try:
                entries = future.result()
                result[resource.name] = {
                    k: Found(str(v.value), bool(v.is_default)) for k, v in entries.items()
                }
            except KafkaException as exc:
                err = exc.args[0]
                # a topic just created can be unknown to the broker asked, for a moment
                if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and time.monotonic() < deadline:
                    retry.append(resource.name)
                else:
                    result[resource.name] = err.str()
        pending = retry
        if pending:
            time.sleep(0.2)
    return result


@dataclass(frozen=True)
class Found:
    """A topic config as the broker reports it."""

    value: str
    default: bool  # not set on the topic: the broker's default

    def __str__(self) -> str:
        return f"{self.value} (broker default)" if self.default else self.value


def _policies(value: str) -> set[str]:
    return {p.strip() for p in value.strip().strip("[]").split(",") if p.strip()}


def _check_config(spec: TopicSpec, found: Mapping[str, Found], report: TopicReport) -> None:
    for key, wanted in sorted(spec.config.items()):
        entry = found.get(key)
        shown = "unset (broker default)" if entry is None else str(entry)
        value = None if entry is None else entry.value
        if key == CLEANUP_POLICY and "compact" in _policies(wanted):
            if value is None or _policies(value) != _policies(wanted):
                report.add(
                    "error",
                    spec.name,
                    f"{key} wanted {wanted}, found {shown}; a changelog that is not "
                    "(only) compacted loses state after retention",
                )
        elif value is None or value.strip() != wanted.strip():
            report.add(
                "warning",
                spec.name,
                f"{key} wanted {wanted}, found {shown}{_why(key, wanted, value)}",
            )
    if CLEANUP_POLICY not in spec.config:
        entry = found.get(CLEANUP_POLICY)
        if entry is not None and "compact" in _policies(entry.value):
            report.add(
                "warning",
                spec.name,
                f"{CLEANUP_POLICY} wanted delete (broker default), found {entry}; "
                "compaction drops older records with the same key",
            )


def _why(key: str, wanted: str, found: str | None) -> str:
    """What a differing value breaks, where that is known."""
    smaller = (
        key == MAX_MESSAGE_BYTES
        and found is not None
        and found.isdigit()
        and wanted.isdigit()
        and int(found) < int(wanted)
    )
    if smaller:
        return (
            "; the largest envelopes would be refused (answered 413): raise it with "
            f"kafka-configs --alter --add-config {MAX_MESSAGE_BYTES}={wanted}"
        )
    return ""
