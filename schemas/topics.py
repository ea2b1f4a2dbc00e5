"""Topic names and the topics a config implies: one naming every process shares.

Names (prefix from ``bridge.topic_prefix``, default ``webhooks``)::

    <prefix>.<provider>                 raw envelopes from the gateway, key = event id
    <prefix>.<provider>.unique          after the compactor, key = ordering key
    <prefix>.<provider>.ordered         after the reorderer, key = ordering key
    <prefix>.<provider>.dedup-state     compactor changelog (compacted), key = event id
    <prefix>.<provider>.reorder-state   reorderer buffer changelog (compacted)
    <prefix>.quarantine                 verified but unusable input, with the reason
    <prefix>.dlq.<sink>                 events a sink gave up on, with the reason

Creating and checking them on a broker is ``deploy/topics.py`` (`webhook-bridge topics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.config import Settings

CLEANUP_POLICY = "cleanup.policy"
MAX_MESSAGE_BYTES = "max.message.bytes"
COMPACTED = {CLEANUP_POLICY: "compact"}


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
    # a changelog's input topic: same partition numbers, so at least as many partitions
    co_partitioned_with: str | None = None


def names(settings: Settings) -> TopicNames:
    return TopicNames(settings.bridge.topic_prefix)


def implied_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the configuration needs, in a stable order."""
    t = names(settings)
    parts, rf = settings.topics.partitions, settings.topics.replication_factor
    base = dict(settings.topics.config)
    # Topics holding envelopes take every batch the producers build (schemas.sizes).
    fits = {MAX_MESSAGE_BYTES: str(settings.producer_config()["message.max.bytes"]), **base}
    specs: list[TopicSpec] = []
    for provider in settings.providers:
        for name in (t.raw(provider), t.unique(provider), t.ordered(provider)):
            specs.append(TopicSpec(name, parts, rf, dict(fits)))
        specs.append(
            TopicSpec(t.dedup_state(provider), parts, rf, {**base, **COMPACTED}, t.raw(provider))
        )
        specs.append(
            TopicSpec(
                t.reorder_state(provider), parts, rf, {**fits, **COMPACTED}, t.unique(provider)
            )
        )
    specs.append(TopicSpec(t.quarantine, parts, rf, dict(fits)))
    for sink in sorted(settings.sinks):
        specs.append(TopicSpec(t.dlq(sink), parts, rf, dict(fits)))
    return specs
