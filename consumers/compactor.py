"""`webhook-bridge compactor`: forward the first copy of each event id, raw -> ``.unique``.

Consumer group ``<prefix>.compactor`` over every provider's raw topic
(key = event id, so duplicates share a partition). A record whose id was seen
within the dedup horizon (per source, default ``compactor.dedup_horizon_s``) is
dropped and counted; the first copy is written to ``<prefix>.<provider>.unique``
re-keyed by its ordering key (``ce_subject``), value and headers untouched.

Memory of seen ids: ``<prefix>.<provider>.dedup-state`` (key = event id, value =
first-seen and expiry, co-partitioned with the raw topic), written in the same
transaction as the output and the input offsets; a RocksDB snapshot in
``compactor.state_dir/<instance id>/<provider>`` makes a restart replay only its
tail. Expired ids are purged locally and tombstoned in the changelog.
An empty ``state_dir`` keeps ids in memory only (restored from Kafka in full).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consumers.runtime.process import add_arguments as add_stage_arguments
from consumers.runtime.process import run_stage

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from consumers.metrics import CompactorMetrics, StageMetrics
    from consumers.runtime.attributes import AttributeReader
    from consumers.runtime.changelog import TopicPartitionKey
    from consumers.runtime.loop import Output, Replay
    from consumers.state.dedup_store import DedupStore, Seen
    from schemas.config import Settings

STAGE = "compactor"
PURGE_INTERVAL_S = 10.0
PURGE_LIMIT = 10_000  # ids tombstoned per partition per purge (keeps a transaction small)
RESTORE_CHUNK = 50_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_stage(args, STAGE, build)


def build(
    settings: Settings, instance_id: str, registry: CollectorRegistry
) -> tuple[Compactor, StageMetrics]:
    from consumers.metrics import CompactorMetrics, StageMetrics
    from consumers.state.dedup_store import MemoryDedupStore, RocksDedupStore

    providers = settings.providers
    state_dir = settings.compactor.state_dir

    def store_for(provider: str) -> DedupStore:
        if not state_dir:
            return MemoryDedupStore()
        return RocksDedupStore(os.path.join(state_dir, instance_id, provider))

    stage_metrics = StageMetrics(STAGE, providers, registry)
    logic = Compactor(settings, store_for, stage_metrics, CompactorMetrics(providers, registry))
    return logic, stage_metrics


@dataclass
class _Provider:
    name: str
    raw: str
    unique: str
    state: str
    store: DedupStore
    owned: set[int] = field(default_factory=set)
    # Changes of the open transaction: (partition, id) -> Seen, or None for a purge.
    pending: dict[tuple[int, bytes], Seen | None] = field(default_factory=dict)


class Compactor:
    """The compactor's `StageLogic`."""

    def __init__(
        self,
        settings: Settings,
        store_for: Callable[[str], DedupStore],
        stage_metrics: StageMetrics,
        metrics: CompactorMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from consumers.runtime.attributes import AttributeReader
        from schemas.serde import EnvelopeDeserializer
        from schemas.topics import names

        t = names(settings)
        self._quarantine = t.quarantine
        self._providers = {
            p: _Provider(p, t.raw(p), t.unique(p), t.dedup_state(p), store_for(p))
            for p in settings.providers
        }
        self._by_input = {prov.raw: prov for prov in self._providers.values()}
        self._by_state = {prov.state: prov for prov in self._providers.values()}
        default_ms = int(settings.compactor.dedup_horizon_s * 1000)
        self._horizon_ms = {
            name: int(s.dedup_horizon_s * 1000) for name, s in settings.sources.items()
        }
        self._default_horizon_ms = default_ms
        deserializer = EnvelopeDeserializer(settings.bridge.schema_registry_url)
        self._reader: AttributeReader = AttributeReader(
            deserializer, need_time=False, framed=deserializer.framed
        )
        self.stage_metrics = stage_metrics
        self.metrics = metrics
        # Label children resolved once: .labels() per record costs more than the lookup.
        self._forwarded = {p: stage_metrics.forwarded.labels(STAGE, p) for p in self._providers}
        self._duplicates = {p: metrics.duplicates.labels(p) for p in self._providers}
        self.clock = clock
        self._next_purge = clock() + PURGE_INTERVAL_S

    # ------------------------------------------------------------------ StageLogic

    def input_topics(self) -> list[str]:
        return sorted(self._by_input)

    def provider_of(self, topic: str) -> str:
        return self._by_input[topic].name

    def process(self, msg: Any, out: Output) -> None:
        from consumers.runtime.attributes import UnroutableRecord
        from consumers.state.dedup_store import Seen

        prov = self._by_input[msg.topic()]
        partition = msg.partition()
        headers = msg.headers()
        value = msg.value()
        try:
            attrs = self._reader.read(msg.key(), value, headers)
        except UnroutableRecord as exc:
            from consumers.runtime.loop import quarantine

            quarantine(out, self._quarantine, STAGE, msg, exc.reason)
            self.stage_metrics.quarantined.labels(STAGE, exc.reason).inc()
            return
        now_ms = int(self.clock() * 1000)
        where = (partition, attrs.event_id)
        if where in prov.pending:
            seen = prov.pending[where]
        else:
            seen = prov.store.get(partition, attrs.event_id)
        if seen is not None and seen.expiry_ms > now_ms:
            self._duplicates[prov.name].inc()
            return
        horizon = self._horizon_ms.get(attrs.source, self._default_horizon_ms)
        seen = Seen(now_ms, now_ms + horizon)
        prov.pending[where] = seen
        out.emit(prov.unique, attrs.subject or attrs.event_id, value, headers)
        out.state(prov.state, partition, attrs.event_id, seen.encode())
        self._forwarded[prov.name].inc()

    def tick(self, now: float, out: Output) -> None:
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_S
        now_ms = int(now * 1000)
        for prov in self._providers.values():
            for partition in sorted(prov.owned):
                for event_id in prov.store.expired(partition, now_ms, PURGE_LIMIT):
                    if (partition, event_id) in prov.pending:
                        continue  # seen again in this very transaction
                    prov.pending[(partition, event_id)] = None
                    out.state(prov.state, partition, event_id, None)

    def next_due(self) -> float | None:
        return self._next_purge

    def prepare_commit(self, out: Output) -> None:
        return

    def committed(self, state_offsets: dict[TopicPartitionKey, int]) -> None:
        for prov in self._providers.values():
            checkpoints = {p: o for (t, p), o in state_offsets.items() if t == prov.state}
            if prov.pending or checkpoints:
                prov.store.write([(p, i, s) for (p, i), s in prov.pending.items()], checkpoints)
                prov.pending.clear()

    def assign(
        self,
        partitions: list[TopicPartitionKey],
        committed: dict[TopicPartitionKey, int],
        replay: Replay,
    ) -> None:
        from consumers.state.dedup_store import Seen

        starts: dict[TopicPartitionKey, int] = {}
        for topic, partition in partitions:
            prov = self._by_input[topic]
            prov.owned.add(partition)
            starts[(prov.state, partition)] = prov.store.checkpoint(partition)
        now_ms = int(self.clock() * 1000)
        batch: dict[TopicPartitionKey, list[tuple[int, bytes, Seen | None]]] = {}

        def flush(where: TopicPartitionKey, checkpoint: int) -> None:
            self._by_state[where[0]].store.write(batch.pop(where, []), {where[1]: checkpoint})

        def apply(topic: str, partition: int, key: bytes, value: bytes | None, offset: int) -> None:
            seen = Seen.decode(value) if value is not None and len(value) == 16 else None
            if seen is not None and seen.expiry_ms <= now_ms:
                seen = None  # expired: forget (the owner's purge tombstones it)
            changes = batch.setdefault((topic, partition), [])
            changes.append((partition, key, seen))
            if len(changes) >= RESTORE_CHUNK:
                flush((topic, partition), offset + 1)

        def stale(topic: str, partition: int) -> None:
            self._by_state[topic].store.forget(partition)

        for where, end in replay(starts, apply, stale).items():
            flush(where, end)
        self.update_gauges(self.clock())

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        for topic, partition in partitions:
            prov = self._by_input.get(topic)
            if prov is not None:
                prov.owned.discard(partition)
                prov.store.drop(partition)

    def reset(self) -> None:
        for prov in self._providers.values():
            prov.pending.clear()
            for partition in list(prov.owned):
                prov.store.drop(partition)
            prov.owned.clear()

    def update_gauges(self, now: float) -> None:
        for prov in self._providers.values():
            self.metrics.remembered.labels(prov.name).set(prov.store.count())

    def close(self) -> None:
        for prov in self._providers.values():
            prov.store.close()
