"""Topic names, and `webhook-bridge topics`: create and check every topic the config implies.

Names (prefix from ``bridge.topic_prefix``, default ``webhooks``)::

    <prefix>.<provider>                 raw envelopes from the gateway, key = event id
    <prefix>.<provider>.unique          after the compactor, key = ordering key
    <prefix>.<provider>.ordered         after the reorderer, key = ordering key
    <prefix>.<provider>.dedup-state     compactor changelog (compacted), key = event id
    <prefix>.<provider>.reorder-state   reorderer buffer changelog (compacted)
    <prefix>.quarantine                 verified but unusable input, with the reason
    <prefix>.dlq.<sink>                 events a sink gave up on, with the reason
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.config import Settings
from gateway.errors import BridgeError

COMPACTED = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicNames:
    prefix: str = "webhooks"

    def raw(self, provider: str) -> str:
        return f"{self.prefix}.{provider}"

    def unique(self, provider: str) -> str:
        return f"{self.prefix}.{provider}.unique"

    def ordered(self, provider: str) -> str:
        return f"{self.prefix}.{provider}.ordered"

    def dedup_state(self, provider: str) -> str:
        return f"{self.prefix}.{provider}.dedup-state"

    def reorder_state(self, provider: str) -> str:
        return f"{self.prefix}.{provider}.reorder-state"

    @property
    def quarantine(self) -> str:
        return f"{self.prefix}.quarantine"

    def dlq(self, sink: str) -> str:
        return f"{self.prefix}.dlq.{sink}"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def names(settings: Settings) -> TopicNames:
    return TopicNames(settings.bridge.topic_prefix)


def implied_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the configuration needs, in a stable order."""
    t = names(settings)
    parts, rf = settings.topics.partitions, settings.topics.replication_factor
    base = dict(settings.topics.config)
    specs: list[TopicSpec] = []
    for provider in settings.providers:
        for name in (t.raw(provider), t.unique(provider), t.ordered(provider)):
            specs.append(TopicSpec(name, parts, rf, dict(base)))
        for name in (t.dedup_state(provider), t.reorder_state(provider)):
            specs.append(TopicSpec(name, parts, rf, {**base, **COMPACTED}))
    specs.append(TopicSpec(t.quarantine, parts, rf, dict(base)))
    for sink in sorted(settings.sinks):
        specs.append(TopicSpec(t.dlq(sink), parts, rf, dict(base)))
    return specs


class TopicError(BridgeError):
    pass


def ensure_topics(
    admin_config: dict[str, str], specs: Iterable[TopicSpec], timeout_s: float = 15.0
) -> dict[str, str]:
    """Create missing topics; check existing ones. Returns {topic: created|exists}.

    Idempotent: a topic that exists with the expected partition count is left
    alone; one with a different partition count is an error (changing it would
    move keys between partitions and break per-key order).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({**admin_config, "log_level": 0})
    specs = list(specs)
    existing = admin.list_topics(timeout=timeout_s).topics
    result: dict[str, str] = {}
    missing: list[TopicSpec] = []
    for spec in specs:
        meta = existing.get(spec.name)
        if meta is None or meta.error is not None:
            missing.append(spec)
            continue
        if len(meta.partitions) != spec.partitions:
            raise TopicError(
                f"topic {spec.name} has {len(meta.partitions)} partitions, config says "
                f"{spec.partitions}; partitions are not changed automatically (key order)"
            )
        result[spec.name] = "exists"
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
                result[name] = "created"
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    result[name] = "exists"
                else:
                    raise TopicError(f"cannot create topic {name}: {err.str()}") from None
    return result
