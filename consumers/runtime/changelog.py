"""Restore state from changelog partitions, reading up to a barrier record we wrote.

The embedded broker reports a wrong high watermark (BROKER-NOTES.md), so "read
to the end" cannot use `get_watermark_offsets`. Instead:

1. In one committed transaction, write a barrier record with a fresh token to
   every state partition being restored (key ``BARRIER_PREFIX + instance id``,
   so compaction keeps one per instance).
2. Read each partition (read_committed) from its start offset until our token
   shows up; everything before it is the partition's committed state.
3. Other barriers (other instances, earlier runs) are skipped; the caller sees
   only state records.

The barrier offset + 1 is returned as the partition's new checkpoint.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from schemas import logs
from schemas.errors import BridgeError

BARRIER_PREFIX = b"\x00barrier:"

TopicPartitionKey = tuple[str, int]
# apply(state topic, partition, key, value or None, offset)
ApplyFn = Callable[[str, int, bytes, bytes | None, int], None]


class RestoreInterrupted(BridgeError):
    """Shutdown was asked for while a restore was waiting."""


class ChangelogReader:
    def __init__(
        self,
        consumer_config: dict[str, Any],
        instance_id: str,
        should_stop: Callable[[], bool],
        alive: Callable[[], None] = lambda: None,
        call_timeout_s: float = 30.0,
    ) -> None:
        self._call_timeout_s = call_timeout_s
        self._config = consumer_config
        self._barrier_key = BARRIER_PREFIX + instance_id.encode()
        self._should_stop = should_stop
        self._alive = alive  # called while waiting: a restore is progress, not a stall
        self._consumer: Any = None

    def replay(
        self,
        producer: Any,
        starts: dict[TopicPartitionKey, int],
        apply: ApplyFn,
        on_stale: Callable[[str, int], None] | None = None,
    ) -> dict[TopicPartitionKey, int]:
        """Replay `starts` (state partition -> first offset); returns barrier offset + 1 each."""
        if not starts:
            return {}
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        token = uuid.uuid4().bytes
        barriers: dict[TopicPartitionKey, int] = {}

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                barriers[(msg.topic(), msg.partition())] = msg.offset()

        producer.begin_transaction()
        for topic, partition in starts:
            producer.produce(
                topic,
                key=self._barrier_key,
                value=token,
                partition=partition,
                on_delivery=delivered,
            )
        producer.flush(self._call_timeout_s)
        producer.commit_transaction(self._call_timeout_s)
        starts = dict(starts)
        for where, offset in list(starts.items()):
            if where in barriers and offset > barriers[where]:
                # The snapshot is ahead of the topic: it was re-created (the embedded
                # broker keeps nothing across a restart). Replay it all instead.
                logs.warning(
                    "local snapshot ahead of its changelog; replaying it all",
                    topic=where[0],
                    partition=where[1],
                    snapshot_offset=offset,
                )
                if on_stale is not None:
                    on_stale(*where)
                starts[where] = 0
        if self._consumer is None:
            self._consumer = Consumer({**self._config, **logs.kafka_client_config("restore")})
        consumer = self._consumer
        consumer.assign(
            [
                TopicPartition(topic, partition, offset if offset > 0 else OFFSET_BEGINNING)
                for (topic, partition), offset in starts.items()
            ]
        )
        pending = set(starts)
        ends: dict[TopicPartitionKey, int] = {}
        records = 0
        started = last_log = time.monotonic()
        try:
            while pending:
                if self._should_stop():
                    raise RestoreInterrupted("shutdown during restore")
                self._alive()
                for msg in consumer.consume(10_000, 0.05):
                    if msg.error() is not None:
                        continue
                    where = (msg.topic(), msg.partition())
                    if where not in pending:
                        continue  # already at our barrier (or a stray record after it)
                    key = msg.key() or b""
                    if key.startswith(BARRIER_PREFIX):
                        if key == self._barrier_key and msg.value() == token:
                            pending.discard(where)
                            ends[where] = msg.offset() + 1
                        continue
                    records += 1
                    apply(where[0], where[1], key, msg.value(), msg.offset())
                if pending and time.monotonic() - last_log > 10.0:
                    last_log = time.monotonic()
                    logs.warning(
                        "restore still waiting for its barrier (an open transaction "
                        "of a dead instance blocks read_committed until it restarts "
                        "or the transaction times out)",
                        partitions=len(pending),
                        records=records,
                    )
        finally:
            consumer.unassign()
        logs.info(
            "state restored",
            partitions=len(starts),
            records=records,
            seconds=round(time.monotonic() - started, 3),
        )
        return ends

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
