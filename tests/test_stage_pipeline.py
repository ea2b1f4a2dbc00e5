"""Raw -> compactor -> reorderer -> ordered, through the real processes on the embedded broker."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas.topics import TopicNames
from tests.conftest import KafkaCluster
from tests.consumer_support import (
    BASE_US,
    RawProducer,
    Stages,
    assert_sorted_except_late,
    create_topics,
    envelope,
    load_settings,
    read_topic,
    write_config,
)

pytestmark = pytest.mark.kafka


def test_duplicates_and_shuffled_times_come_out_once_sorted_and_late_marked(
    kafka: KafkaCluster,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    prefix = unique_name("pipe")
    cfg = write_config(tmp_path, kafka.bootstrap, prefix, window_s=2.0)
    create_topics(load_settings(cfg))
    names = TopicNames(prefix)
    rng = random.Random(7)
    stages = Stages(tmp_path)
    try:
        compactor = stages.start("compactor", cfg)
        reorderer = stages.start("reorderer", cfg)
        producer = RawProducer(kafka.bootstrap)
        events = [
            envelope(f"evt-{k}-{i}", f"key-{k}", BASE_US + i * 1000 + k)
            for k in range(20)
            for i in range(15)
        ]
        sends = [e for e in events for _ in range(rng.randint(1, 3))]
        rng.shuffle(sends)
        for env in sends:
            producer.send(names.raw("acme"), env)
        producer.send_raw(names.raw("acme"), None, b"not avro", None)  # poison
        producer.flush()
        on_time = read_topic(kafka.bootstrap, names.ordered("acme"), expect=len(events), idle_s=1.0)
        assert len(on_time) == len(events), stages.logs()
        # Late: older than everything released for their keys, and after the window.
        late = [envelope(f"late-{k}", f"key-{k}", BASE_US - 1_000_000) for k in range(5)]
        for env in late:
            producer.send(names.raw("acme"), env)
            producer.send(names.raw("acme"), env)  # a duplicate of a late one
        producer.flush()
        time.sleep(0.5)
        for proc in (compactor, reorderer):  # the commit phase is timed on its own
            commits = _sample(proc.metrics(), "webhook_bridge_stage_commit_duration_seconds_count")
            assert commits > 0, proc.stage
        assert compactor.terminate() == 0
        assert reorderer.terminate() == 0
        out = read_topic(kafka.bootstrap, names.ordered("acme"), expect=len(events) + 5, idle_s=1.0)
        counts = Counter(r.event_id for r in out)
        assert set(counts) == {e.event_id for e in events + late}
        assert max(counts.values()) == 1
        assert {r.event_id for r in out if r.late} == {e.event_id for e in late}
        assert_sorted_except_late(out)
        for r in out:  # re-keyed by ordering key, CloudEvents headers kept
            assert r.key == r.headers["ce_subject"]
        quarantined = read_topic(kafka.bootstrap, names.quarantine, expect=1, idle_s=0.5)
        assert len(quarantined) == 1
        q = quarantined[0]
        assert q.value == b"not avro"
        assert q.headers["x-quarantine-stage"] == b"compactor"
        assert q.headers["x-quarantine-reason"] == b"no_event_id"
        assert q.headers["x-origin-topic"] == names.raw("acme").encode()
    finally:
        stages.close()


def _sample(exposition: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in exposition.splitlines() if line.startswith(name))
