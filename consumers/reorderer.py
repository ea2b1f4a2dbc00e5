"""`webhook-bridge reorderer`: restore occurrence order per partition, ``.unique`` -> ``.ordered``.

Consumer group ``<prefix>.reorderer`` over every provider's ``.unique`` topic
(key = ordering key, so one key lives in one partition). Each input partition
has a `ReorderBuffer` (see `consumers.state.reorder_buffer` for the release
rule); the window is the source's ``reorder_window_s`` (from ``ce_source``),
default ``reorderer.window_s``. Output: ``<prefix>.<provider>.ordered``, same key,
value and headers; a late event gets the extra header ``late: 1``.

The buffer is state: every buffered record is written to
``<prefix>.<provider>.reorder-state`` (same partition number) in the transaction
that consumed it, and tombstoned in the transaction that released it, so a
crash or rebalance loses nothing and (on Apache Kafka) releases nothing twice.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consumers.runtime.process import add_arguments as add_stage_arguments
from consumers.runtime.process import run_stage
from schemas.records import LATE_HEADER

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from consumers.metrics import ReordererMetrics, StageMetrics
    from consumers.runtime.changelog import TopicPartitionKey
    from consumers.runtime.loop import Output, Replay
    from consumers.state.reorder_buffer import Release, ReorderBuffer
    from consumers.state.reorder_codec import BufferedRecord
    from schemas.config import Settings

STAGE = "reorderer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_stage(args, STAGE, build)


def build(
    settings: Settings, instance_id: str, registry: CollectorRegistry
) -> tuple[Reorderer, StageMetrics]:
    from consumers.metrics import ReordererMetrics, StageMetrics

    stage_metrics = StageMetrics(STAGE, settings.providers, registry)
    return Reorderer(
        settings, stage_metrics, ReordererMetrics(settings.providers, registry)
    ), stage_metrics


@dataclass
class _Partition:
    provider: _Provider
    number: int
    buffer: ReorderBuffer[BufferedRecord]
    # Input offsets at/after the committed position that a visible-but-uncommitted
    # transaction already released (only the embedded broker shows those): skip them.
    released_ahead: set[int] = field(default_factory=set)
    watermark_dirty: bool = False


@dataclass
class _Provider:
    name: str
    unique: str
    ordered: str
    state: str


class Reorderer:
    """The reorderer's `StageLogic`."""

    def __init__(
        self,
        settings: Settings,
        stage_metrics: StageMetrics,
        metrics: ReordererMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from consumers.runtime.attributes import AttributeReader
        from schemas.serde import EnvelopeDeserializer
        from schemas.topics import names

        t = names(settings)
        self._quarantine = t.quarantine
        providers = [
            _Provider(p, t.unique(p), t.ordered(p), t.reorder_state(p)) for p in settings.providers
        ]
        self._by_input = {p.unique: p for p in providers}
        self._by_state = {p.state: p for p in providers}
        self._windows = {name: s.reorder_window_s for name, s in settings.sources.items()}
        self._default_window = settings.reorderer.window_s
        self.early_release = settings.reorderer.early_release
        deserializer = EnvelopeDeserializer(settings.bridge.schema_registry_url)
        self._reader = AttributeReader(deserializer, framed=deserializer.framed)
        self._partitions: dict[TopicPartitionKey, _Partition] = {}
        self.stage_metrics = stage_metrics
        self.metrics = metrics
        self.clock = clock

    # ------------------------------------------------------------------ StageLogic

    def input_topics(self) -> list[str]:
        return sorted(self._by_input)

    def provider_of(self, topic: str) -> str:
        return self._by_input[topic].name

    def process(self, msg: Any, out: Output) -> None:
        from consumers.runtime.attributes import UnroutableRecord
        from consumers.runtime.loop import quarantine
        from consumers.state.reorder_codec import BufferedRecord, encode, record_key

        part = self._partitions[(msg.topic(), msg.partition())]
        offset = msg.offset()
        if offset in part.released_ahead:
            part.released_ahead.discard(offset)
            return
        headers = msg.headers() or []
        value = msg.value()
        try:
            attrs = self._reader.read(msg.key(), value, headers)
        except UnroutableRecord as exc:
            quarantine(out, self._quarantine, STAGE, msg, exc.reason)
            self.stage_metrics.quarantined.labels(STAGE, exc.reason).inc()
            return
        now = self.clock()
        window = self._windows.get(attrs.source, self._default_window)
        record = BufferedRecord(offset, msg.key(), value, headers)
        late = part.buffer.add(attrs.occurred_us, window, now, record)
        if late:
            self._release(part, late, out)
            return
        out.state(
            part.provider.state,
            part.number,
            record_key(offset),
            encode(now, attrs.occurred_us, window, record),
        )
        self._release(part, part.buffer.due(now), out)

    def tick(self, now: float, out: Output) -> None:
        for part in self._partitions.values():
            if len(part.buffer):
                self._release(part, part.buffer.due(now), out)

    def next_due(self) -> float | None:
        """The earliest release deadline over every partition: the loop wakes for it."""
        due: float | None = None
        for part in self._partitions.values():
            deadline = part.buffer.next_deadline()
            if deadline is not None and (due is None or deadline < due):
                due = deadline
        return due

    def prepare_commit(self, out: Output) -> None:
        from consumers.state.reorder_codec import WATERMARK_KEY, encode_watermark

        for part in self._partitions.values():
            if part.watermark_dirty and part.buffer.last_released_us is not None:
                out.state(
                    part.provider.state,
                    part.number,
                    WATERMARK_KEY,
                    encode_watermark(part.buffer.last_released_us),
                )
                part.watermark_dirty = False

    def committed(self, state_offsets: dict[TopicPartitionKey, int]) -> None:
        return

    def assign(
        self,
        partitions: list[TopicPartitionKey],
        committed: dict[TopicPartitionKey, int],
        replay: Replay,
    ) -> None:
        from consumers.state.reorder_buffer import ReorderBuffer
        from consumers.state.reorder_codec import (
            WATERMARK_KEY,
            decode,
            decode_watermark,
            offset_of,
        )

        starts: dict[TopicPartitionKey, int] = {}
        for topic, number in partitions:
            provider = self._by_input[topic]
            starts[(provider.state, number)] = 0
        records: dict[TopicPartitionKey, dict[int, bytes | None]] = {w: {} for w in starts}
        watermarks: dict[TopicPartitionKey, int] = {}

        def apply(topic: str, number: int, key: bytes, value: bytes | None, offset: int) -> None:
            if key == WATERMARK_KEY:
                if value is not None:
                    watermarks[(topic, number)] = decode_watermark(value)
                return
            input_offset = offset_of(key)
            if input_offset is not None:
                records[(topic, number)][input_offset] = value

        replay(starts, apply)
        for (state_topic, number), entries in records.items():
            provider = self._by_state[state_topic]
            position = max(0, committed.get((provider.unique, number), 0))
            part = _Partition(provider, number, ReorderBuffer(self.early_release))
            for input_offset in sorted(entries):
                data = entries[input_offset]
                if input_offset >= position:
                    # Not committed as consumed: it will be consumed again. If an
                    # uncommitted transaction already released it, skip it then.
                    if data is None:
                        part.released_ahead.add(input_offset)
                    continue
                if data is None:
                    continue
                stored = decode(input_offset, data)
                part.buffer.add(stored.occurred_us, stored.window_s, stored.arrival, stored.record)
            part.buffer.last_released_us = watermarks.get((state_topic, number))
            self._partitions[(provider.unique, number)] = part
        self.update_gauges(self.clock())

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        for where in partitions:
            self._partitions.pop(where, None)

    def reset(self) -> None:
        self._partitions.clear()

    def update_gauges(self, now: float) -> None:
        buffered = dict.fromkeys(self.metrics_providers(), 0)
        oldest = dict.fromkeys(self.metrics_providers(), 0.0)
        for part in self._partitions.values():
            name = part.provider.name
            buffered[name] += len(part.buffer)
            arrival = part.buffer.oldest_arrival()
            if arrival is not None:
                oldest[name] = max(oldest[name], now - arrival)
        for name in buffered:
            self.metrics.buffered.labels(name).set(buffered[name])
            self.metrics.oldest_age.labels(name).set(oldest[name])

    def metrics_providers(self) -> list[str]:
        return [p.name for p in self._by_input.values()]

    # ------------------------------------------------------------------ helpers

    def _release(
        self, part: _Partition, releases: list[Release[BufferedRecord]], out: Output
    ) -> None:
        from consumers.state.reorder_codec import record_key

        if not releases:
            return
        provider = part.provider
        for release in releases:
            record = release.item
            headers = record.headers
            if release.late:
                headers = [*headers, LATE_HEADER]
                self.metrics.late.labels(provider.name).inc()
                self.metrics.lateness.labels(provider.name).observe(release.lateness_s)
            else:
                part.watermark_dirty = True
            out.emit(provider.ordered, record.key, record.value, headers)
            # Tombstone: released (also for late ones, which were never buffered,
            # so a replay after an uncommitted release can skip them).
            out.state(provider.state, part.number, record_key(record.offset), None)
        self.stage_metrics.forwarded.labels(STAGE, provider.name).inc(len(releases))
