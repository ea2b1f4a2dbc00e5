from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.cli import main as cli_main
from deploy.topics import TopicError, create_and_check_topics, ensure_topics
from schemas.topics import TopicSpec, implied_topics, names
from tests.conftest import KafkaCluster
from tests.support import DEMO_ENV, gateway_toml, settings_from_toml


def test_implied_topics_follow_the_config() -> None:
    text = gateway_toml("k:9092", "acme") + '\n[sinks.ledger]\ntype = "log"\n'
    names = [spec.name for spec in implied_topics(settings_from_toml(text))]
    for provider in ("jiko", "fintoc", "justwallet"):
        for suffix in ("", ".unique", ".ordered", ".dedup-state", ".reorder-state"):
            assert f"acme.{provider}{suffix}" in names
    assert "acme.quarantine" in names and "acme.dlq.ledger" in names
    assert len(names) == len(set(names))
    specs = {s.name: s for s in implied_topics(settings_from_toml(text))}
    assert specs["acme.jiko"].partitions == 2
    assert specs["acme.jiko.dedup-state"].config["cleanup.policy"] == "compact"
    assert specs["acme.jiko.dedup-state"].co_partitioned_with == "acme.jiko"
    assert specs["acme.jiko.reorder-state"].co_partitioned_with == "acme.jiko.unique"
    assert "cleanup.policy" not in specs["acme.jiko.ordered"].config


def _create(kafka: KafkaCluster, name: str, partitions: int, config: dict[str, str]) -> None:
    """Create a topic behind the bridge's back, as an operator or auto-creation would."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({**kafka.client_config()})
    for future in admin.create_topics([NewTopic(name, partitions, 1, config=config)]).values():
        future.result()


def _described(kafka: KafkaCluster, topics: list[str]) -> dict[str, dict[str, str]]:
    """Topic configs as the broker reports them, asked independently of deploy.topics."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({**kafka.client_config()})
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics])
    try:
        return {r.name: {k: v.value for k, v in f.result().items()} for r, f in futures.items()}
    except KafkaException as exc:
        pytest.skip(f"the broker ({kafka.mode}) cannot describe topic configs: {exc}")


def _broker_default_policy(kafka: KafkaCluster) -> str:
    """How an unset cleanup.policy is reported: Apache Kafka names its default value."""
    return "delete (broker default)" if kafka.is_apache else "unset (broker default)"


@pytest.mark.kafka
def test_ensure_topics_is_idempotent(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("topics")
    settings = settings_from_toml(gateway_toml(kafka.bootstrap, prefix))
    specs = implied_topics(settings)
    first = ensure_topics(kafka.client_config(), specs)
    assert set(first.values()) == {"created"}
    second = ensure_topics(kafka.client_config(), specs)
    assert set(second.values()) == {"exists"}
    assert first.keys() == second.keys() == {s.name for s in specs}


@pytest.mark.kafka
def test_a_correctly_created_set_passes_the_check(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    settings = settings_from_toml(gateway_toml(kafka.bootstrap, unique_name("clean")))
    specs = implied_topics(settings)
    created = create_and_check_topics(kafka.client_config(), specs)
    assert set(created.status.values()) == {"created"}
    assert created.problems == []
    again = create_and_check_topics(kafka.client_config(), specs)
    assert set(again.status.values()) == {"exists"}
    assert again.problems == []


@pytest.mark.kafka
def test_created_changelogs_are_really_compacted(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    settings = settings_from_toml(gateway_toml(kafka.bootstrap, unique_name("compact")))
    ensure_topics(kafka.client_config(), implied_topics(settings))
    t = names(settings)
    changelogs = [t.dedup_state("jiko"), t.reorder_state("jiko")]
    described = _described(kafka, [*changelogs, t.ordered("jiko")])
    for topic in changelogs:
        assert described[topic].get("cleanup.policy") == "compact", described[topic]
    # a record topic keeps every record: never compacted
    assert described[t.ordered("jiko")].get("cleanup.policy", "delete") == "delete"


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("config", "found"),
    [({}, None), ({"cleanup.policy": "delete"}, "delete")],
)
def test_a_precreated_changelog_that_is_not_compacted_is_an_error(
    kafka: KafkaCluster,
    unique_name: Callable[[str], str],
    config: dict[str, str],
    found: str | None,
) -> None:
    found = found or _broker_default_policy(kafka)
    settings = settings_from_toml(gateway_toml(kafka.bootstrap, unique_name("plain")))
    changelog = names(settings).dedup_state("jiko")
    _create(kafka, changelog, 2, config)
    expected = f"topic {changelog}: cleanup.policy wanted compact, found {found}"
    with pytest.raises(TopicError, match=re.escape(expected)):
        ensure_topics(kafka.client_config(), implied_topics(settings))
    report = create_and_check_topics(kafka.client_config(), implied_topics(settings))
    assert [str(p).split(";")[0] for p in report.errors] == [expected]


@pytest.mark.kafka
def test_topics_command_exits_non_zero_on_a_topic_error(
    kafka: KafkaCluster,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)
    prefix = unique_name("cmd")
    config = tmp_path / "bridge.toml"
    config.write_text(gateway_toml(kafka.bootstrap, prefix))
    assert cli_main(["topics", "--config", str(config)]) == 0
    assert "error" not in capsys.readouterr().err
    other = unique_name("cmd")
    _create(kafka, f"{other}.fintoc.reorder-state", 2, {"retention.ms": "60000"})
    config.write_text(gateway_toml(kafka.bootstrap, other))
    assert cli_main(["topics", "--config", str(config)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("error: ")] == [
        f"error: topic {other}.fintoc.reorder-state: cleanup.policy wanted compact, found "
        f"{_broker_default_policy(kafka)}; a changelog that is not (only) compacted loses state "
        "after retention"
    ]


@pytest.mark.kafka
def test_a_changelog_with_fewer_partitions_than_its_input_is_an_error(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    settings = settings_from_toml(gateway_toml(kafka.bootstrap, unique_name("copart")))
    t = names(settings)
    _create(kafka, t.dedup_state("jiko"), 1, {"cleanup.policy": "compact"})
    report = create_and_check_topics(kafka.client_config(), implied_topics(settings))
    assert [str(p).split(";")[0] for p in report.errors] == [
        f"topic {t.dedup_state('jiko')}: partitions wanted >= 2 (co-partitioned with "
        f"{t.raw('jiko')}), found 1"
    ]


@pytest.mark.kafka
def test_differences_that_do_not_lose_data_are_warnings(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    name, ordered = unique_name("warn"), unique_name("warn")
    _create(kafka, name, 1, {"retention.ms": "60000"})
    _create(kafka, ordered, 1, {"cleanup.policy": "compact"})
    warnings: list[str] = []
    specs = [TopicSpec(name, 1, 3, {"retention.ms": "120000"}), TopicSpec(ordered, 1, 1)]
    status = ensure_topics(kafka.client_config(), specs, on_warning=warnings.append)
    assert status == {name: "exists", ordered: "exists"}
    assert sorted(w.split(";")[0] for w in warnings) == sorted(
        [
            f"warning: topic {name}: replication factor wanted 3, found 1",
            f"warning: topic {name}: retention.ms wanted 120000, found 60000",
            f"warning: topic {ordered}: cleanup.policy wanted delete (broker default), "
            "found compact",
        ]
    )


@pytest.mark.kafka
def test_a_topic_too_small_for_the_largest_envelope_is_warned_with_the_fix(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("small")
    _create(kafka, name, 1, {"max.message.bytes": "200000"})
    warnings: list[str] = []
    spec = TopicSpec(name, 1, 1, {"max.message.bytes": "1104204"})
    ensure_topics(kafka.client_config(), [spec], on_warning=warnings.append)
    assert warnings == [
        f"warning: topic {name}: max.message.bytes wanted 1104204, found 200000; the largest "
        "envelopes would be refused (answered 413): raise it with "
        "kafka-configs --alter --add-config max.message.bytes=1104204"
    ]


@pytest.mark.kafka
def test_a_broker_that_cannot_describe_configs_is_reported_not_failed(
    kafka: KafkaCluster, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import Future

    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    def unsupported(self: AdminClient, resources: list[Any], **_: Any) -> dict[Any, Future[Any]]:
        futures: dict[Any, Future[Any]] = {}
        for resource in resources:
            future: Future[Any] = Future()
            future.set_exception(KafkaException(KafkaError(KafkaError._UNSUPPORTED_FEATURE)))
            futures[resource] = future
        return futures

    monkeypatch.setattr(AdminClient, "describe_configs", unsupported)
    name = unique_name("nodescribe")
    warnings: list[str] = []
    spec = TopicSpec(name, 1, 1, {"cleanup.policy": "compact"})
    assert ensure_topics(kafka.client_config(), [spec], on_warning=warnings.append) == {
        name: "created"
    }
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: topic {name}: the broker could not describe")
    assert warnings[0].endswith("not checked: cleanup.policy")


@pytest.mark.kafka
def test_partition_mismatch_is_refused(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("mismatch")
    ensure_topics(kafka.client_config(), [TopicSpec(name, 2, 1)])
    with pytest.raises(TopicError, match=re.escape(f"topic {name}: partitions wanted 4, found 2")):
        ensure_topics(kafka.client_config(), [TopicSpec(name, 4, 1)])
