from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.topics import TopicError, TopicSpec, ensure_topics, implied_topics
from tests.conftest import KafkaCluster
from tests.support import gateway_toml, settings_from_toml


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
def test_partition_mismatch_is_refused(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("mismatch")
    ensure_topics(kafka.client_config(), [TopicSpec(name, 2, 1)])
    with pytest.raises(TopicError, match="has 2 partitions, config says 4"):
        ensure_topics(kafka.client_config(), [TopicSpec(name, 4, 1)])
