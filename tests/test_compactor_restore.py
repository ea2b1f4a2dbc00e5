"""The compactor's memory of ids comes back from Kafka, with or without its local snapshot."""

from __future__ import annotations

import shutil
import time
import urllib.request
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

pytestmark = pytest.mark.kafka


def _send(producer: RawProducer, topic: str, ids: range) -> None:
    for i in ids:
        producer.send(topic, envelope(f"id-{i}", f"k{i % 7}", BASE_US + i))
    producer.flush()


@pytest.mark.parametrize("wipe_snapshot", [False, True], ids=["snapshot", "kafka-only"])
def test_restart_remembers_ids(
    kafka: KafkaCluster, unique_name: Callable[[str], str], tmp_path: Path, wipe_snapshot: bool
) -> None:
    prefix = unique_name("restore")
    state_dir = tmp_path / "state"
    cfg = write_config(tmp_path, kafka.bootstrap, prefix, state_dir=str(state_dir))
    create_topics(load_settings(cfg))
    names = TopicNames(prefix)
    raw = names.raw("acme")
    producer = RawProducer(kafka.bootstrap)
    stages = Stages(tmp_path)
    try:
        first = stages.start("compactor", cfg)
        _send(producer, raw, range(300))
        assert len(read_topic(kafka.bootstrap, names.unique("acme"), expect=300, idle_s=0.5)) == 300
        assert first.terminate() == 0
        if wipe_snapshot:
            shutil.rmtree(state_dir)
        stages.start("compactor", cfg)
        _send(producer, raw, range(200, 400))  # 100 duplicates of remembered ids, 100 new
        out = read_topic(kafka.bootstrap, names.unique("acme"), expect=400, idle_s=2.0)
        ids = [r.event_id for r in out]
        assert sorted(ids) == sorted(f"id-{i}" for i in range(400))
        assert "state restored" in stages.logs()
    finally:
        stages.close()


def test_ops_endpoint_serves_every_series_from_the_start(
    kafka: KafkaCluster,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    prefix = unique_name("ops")
    cfg = write_config(tmp_path, kafka.bootstrap, prefix)
    create_topics(load_settings(cfg))
    stages = Stages(tmp_path)
    try:
        proc = stages.start("reorderer", cfg)
        port = None
        for _ in range(200):
            text = stages.logs()
            if "ops endpoint listening" in text:
                port = int(text.split("ops endpoint listening")[1].split("port=")[1].split()[0])
                break
            assert proc.alive(), text
            time.sleep(0.05)
        assert port is not None
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = body.decode()
        for name in (
            "webhook_bridge_stage_consumed_total",
            "webhook_bridge_stage_forwarded_total",
            "webhook_bridge_reorderer_late_events_total",
            "webhook_bridge_reorderer_buffered_events",
            "webhook_bridge_stage_consumer_lag_messages",
        ):
            assert f"{name}{{" in text and 'provider="acme"' in text, name
        assert (
            'webhook_bridge_stage_quarantined_total{reason="undecodable",stage="reorderer"}' in text
        )
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
        assert proc.terminate() == 0
    finally:
        stages.close()
