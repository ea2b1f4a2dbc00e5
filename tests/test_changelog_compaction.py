"""The state changelogs are really compacted on Apache Kafka, and a restore reads what is live.

The reorderer writes every buffered record to its changelog and tombstones it on
release; the compactor remembers each id and tombstones it when the dedup horizon
passes. With small segments (``segment.ms``) the broker's log cleaner drops the
superseded records and the tombstones, so the changelogs stay near the live state
however many events went through, and a restarted reorderer (which has no local
snapshot) restores only that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas.topics import TopicNames
from tests.conftest import KafkaCluster
from tests.consumer_support import (
    BASE_US,
    RawProducer,
    Stages,
    create_topics,
    envelope,
    load_settings,
    read_topic,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.real_kafka]
EVENTS = 3000
# Small segments and an eager cleaner, on every topic of the test (the changelogs get
# cleanup.policy=compact on top).
FAST_COMPACTION = {
    "segment.ms": "1000",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "0",
    "min.compaction.lag.ms": "0",
}


def count_records(bootstrap: str, topic: str) -> int:
    """Records readable from the start of every partition (up to the high watermark)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "count", "log_level": 0})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10) for p in parts}
        pending = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in pending])
        count = 0
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.2):
                if msg.error() is not None:
                    continue
                count += 1
                partition, offset = msg.partition(), msg.offset()
                if (
                    partition is not None
                    and offset is not None
                    and offset + 1 >= ends[partition][1]
                ):
                    pending.discard(partition)
            # a partition may end in transaction markers, which are never returned
            for p in list(pending):
                position = consumer.position([TopicPartition(topic, p)])[0].offset
                if position >= ends[p][1] - 1:
                    pending.discard(p)
        return count
    finally:
        consumer.close()


def test_changelogs_shrink_to_the_live_state_and_a_restore_reads_only_that(
    kafka: KafkaCluster, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("compact")
    cfg = write_config(
        tmp_path,
        kafka.bootstrap,
        prefix,
        window_s=0.2,
        horizon_s=2.0,
        topic_config=FAST_COMPACTION,
    )
    create_topics(load_settings(cfg))
    names = TopicNames(prefix)
    stages = Stages(tmp_path)
    producer = RawProducer(kafka.bootstrap)
    try:
        for stage in ("compactor", "reorderer"):
            stages.start(stage, cfg).wait_ready()
        for i in range(EVENTS):
            producer.send(names.raw("acme"), envelope(f"e{i}", f"k{i % 40}", BASE_US + i))
        producer.flush()
        assert len(read_topic(kafka.bootstrap, names.ordered("acme"), expect=EVENTS)) >= EVENTS
        written = {
            "reorder": 2 * EVENTS,  # a record and its tombstone per event
            "dedup": 2 * EVENTS,  # an id and, after the 2 s horizon, its tombstone
        }
        # A trickle keeps segments rolling (a segment closes on the first write after
        # segment.ms), so the cleaner gets to the old ones.
        left: dict[str, int] = {}
        started = time.monotonic()
        i = EVENTS
        while time.monotonic() - started < 120:
            producer.send(names.raw("acme"), envelope(f"e{i}", f"k{i % 40}", BASE_US + i))
            producer.flush()
            i += 1
            time.sleep(0.5)
            left = {
                "reorder": count_records(kafka.bootstrap, names.reorder_state("acme")),
                "dedup": count_records(kafka.bootstrap, names.dedup_state("acme")),
            }
            if all(n < written[k] // 20 for k, n in left.items()):
                break
        compacted_after = time.monotonic() - started
        print(
            f"\n{prefix}: changelog records left {left} of {written} after {compacted_after:.0f} s"
        )
        assert all(n < written[k] // 20 for k, n in left.items()), left

        reorderer = next(p for p in stages.started if p.stage == "reorderer")
        assert reorderer.terminate() == 0
        again = stages.start("reorderer", cfg)
        again.wait_ready()
        restored = [
            int(line.split("records=")[1].split()[0])
            for line in again.log_text().splitlines()
            if "state restored" in line
        ]
        print(f"restarted reorderer restored {restored} records")
        assert restored and sum(restored) < written["reorder"] // 20
    finally:
        stages.close()
