"""Crash and rebalance the real stage processes under load: nothing is lost.

On the embedded broker, aborted transactions stay visible, so a kill -9 can
duplicate what the in-flight transaction held: the tests count and print those
duplicates and bound them; the `real_kafka` variant asserts zero.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.topics import TopicNames
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

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
# The most one transaction holds (`max_batch`), kept small here so that the bound on
# duplicates below is tight: a restart that re-read its input from the start, or
# restored no dedup state, would exceed it by thousands.
MAX_BATCH = 200


class Load(threading.Thread):
    """Sends `count` distinct events (plus ~30% duplicates) at about `rate` per second."""

    def __init__(self, bootstrap: str, topic: str, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.producer = RawProducer(bootstrap)
        self.topic, self.count, self.rate = topic, count, rate
        self.ids: set[str] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            rng = random.Random(11)
            started = time.monotonic()
            for i in range(self.count):
                jitter = rng.randint(-200_000, 200_000)
                env = envelope(f"e{i}", f"k{i % 50}", BASE_US + i * 1000 + jitter)
                self.ids.add(env.event_id)
                for _ in range(2 if rng.random() < 0.3 else 1):
                    self.producer.send(self.topic, env)
                ahead = (i + 1) / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            self.producer.flush()
        except BaseException as exc:
            self.error = exc


def _run_and_check(
    kafka: KafkaCluster,
    tmp_path: Path,
    prefix: str,
    scenario: Callable[[Stages, Path, Load], int],
    count: int,
    zero_duplicates: bool,
) -> None:
    cfg = write_config(tmp_path, kafka.bootstrap, prefix, window_s=0.5, max_batch=MAX_BATCH)
    create_topics(load_settings(cfg))
    names = TopicNames(prefix)
    stages = Stages(tmp_path)
    try:
        load = Load(kafka.bootstrap, names.raw("acme"), count, rate=800)
        kills = scenario(stages, cfg, load)
        load.join(120)
        assert load.error is None and not load.is_alive()
        out = read_topic(
            kafka.bootstrap, names.ordered("acme"), expect=count, idle_s=3.0, timeout_s=150
        )
        for proc in stages.started:
            if proc.alive():
                assert proc.terminate() == 0
        counts = Counter(r.event_id for r in out)
        missing = load.ids - set(counts)
        duplicates = sum(n - 1 for n in counts.values())
        print(
            f"\n{prefix}: {count} events, {kills} kills, {len(out)} delivered, "
            f"{len(missing)} missing, {duplicates} duplicates"
        )
        assert not missing, f"lost {len(missing)}: {sorted(missing)[:10]}\n{stages.logs()}"
        if zero_duplicates:
            assert duplicates == 0
        else:
            assert duplicates <= kills * 2 * MAX_BATCH
    finally:
        stages.close()


def _kill_and_restart(stages: Stages, cfg: Path, load: Load) -> int:
    rng = random.Random(5)
    current = {s: stages.start(s, cfg) for s in ("compactor", "reorderer")}
    time.sleep(4)  # first join
    load.start()
    kills = 0
    for _ in range(3):
        time.sleep(rng.uniform(1.0, 3.0))
        for stage in rng.sample(["compactor", "reorderer"], 2):
            current[stage].kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.5))
            current[stage] = stages.start(stage, cfg)
    return kills


def _rebalance(stages: Stages, cfg: Path, load: Load) -> int:
    procs = {(s, i): stages.start(s, cfg, i) for s in ("compactor", "reorderer") for i in "ab"}
    time.sleep(4)
    load.start()
    time.sleep(3)
    procs[("compactor", "b")].kill()
    procs[("reorderer", "b")].kill()
    # The survivors take over b's partitions after the session timeout. On the embedded
    # broker an open transaction of a killed instance blocks read_committed until the
    # same transactional.id initialises again, so b comes back after a while.
    time.sleep(10)
    stages.start("compactor", cfg, "b")
    stages.start("reorderer", cfg, "b")
    return 2


def test_kill_9_each_stage_under_load_loses_nothing(
    kafka: KafkaCluster,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    _run_and_check(
        kafka,
        tmp_path,
        unique_name("kill"),
        _kill_and_restart,
        12_000,
        zero_duplicates=kafka.mode != "embedded",
    )


def test_two_instances_one_killed_rebalances_and_loses_nothing(
    kafka: KafkaCluster,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    _run_and_check(
        kafka,
        tmp_path,
        unique_name("rebal"),
        _rebalance,
        12_000,
        zero_duplicates=kafka.mode != "embedded",
    )


@pytest.mark.real_kafka
def test_kill_9_on_apache_kafka_duplicates_nothing(
    kafka: KafkaCluster,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    _run_and_check(
        kafka, tmp_path, unique_name("eos"), _kill_and_restart, 12_000, zero_duplicates=True
    )
