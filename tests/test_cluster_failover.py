"""A three-node Apache Kafka cluster losing brokers under load.

Topics have replication factor 3 and min.insync.replicas 2. The gateway takes signed
webhooks from a few threads while the compactor and the reorderer run as processes:

1. kill -9 the broker leading partition 0 of the raw topic: the gateway answers 200
   again once a new leader is elected (two in-sync replicas are enough);
2. kill -9 a second broker: now no write can reach min ISR, and the gateway answers
   only 503 (never a 2xx it could not keep);
3. restart both: they rejoin (every partition's ISR is whole again) and the gateway
   answers 200 by itself, with no restart.

Then every id answered 200 is in the raw topic, and `.ordered` holds each of them
exactly once: no acknowledged loss, no duplicate across the leader changes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy import apache_kafka
from deploy.apache_kafka import ApacheKafka
from deploy.topics import ensure_topics
from gateway.app import create_app
from gateway.sources import verify_context
from gateway.verify import sign_request
from schemas.topics import implied_topics, names
from tests.conftest import TEST_BROKER_CONFIG
from tests.consumer_support import Stages, read_topic
from tests.support import DEMO_ENV, serve, settings_from_toml
from tests.test_gateway_outage import Load

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.real_kafka]


@pytest.fixture(scope="module")
def cluster3() -> Iterator[ApacheKafka]:
    with apache_kafka.running(nodes=3, config=TEST_BROKER_CONFIG) as cluster:
        yield cluster


def _config(bootstrap: str, prefix: str, state: Path) -> str:
    return f"""
[bridge]
topic_prefix = "{prefix}"
[kafka]
"bootstrap.servers" = "{bootstrap}"
[kafka.producer]
"transaction.timeout.ms" = "10000"
[topics]
partitions = 3
replication_factor = 3
config = {{ "min.insync.replicas" = "2" }}
[gateway]
deadline_s = 1.0
[compactor]
state_dir = "{state}"
max_batch = 200
[reorderer]
window_s = 0.5
max_batch = 200
[sources.fintoc]
scheme = "fintoc"
secrets = ["FINTOC_WEBHOOK_SECRET"]
"""


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s}s"
        time.sleep(0.1)
    return time.monotonic() - started


def _isr_whole(cluster: ApacheKafka, topic: str) -> bool:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 0})
    meta = admin.list_topics(topic, timeout=5)
    partitions = meta.topics[topic].partitions.values()
    return len(meta.brokers) == 3 and all(len(p.isrs) == 3 for p in partitions)


def test_losing_the_leader_then_min_isr_keeps_every_acknowledged_event_once(
    cluster3: ApacheKafka,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)  # the stage processes load the same config
    prefix = unique_name("failover")
    text = _config(cluster3.bootstrap, prefix, tmp_path / "state")
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(text)
    settings = settings_from_toml(text)
    ensure_topics(settings.admin_config(), implied_topics(settings))
    raw, ordered = names(settings).raw("fintoc"), names(settings).ordered("fintoc")
    source = settings.sources["fintoc"]
    stages = Stages(tmp_path)
    try:
        for stage in ("compactor", "reorderer"):
            stages.start(stage, cfg).wait_ready()

        def sign(body: bytes) -> dict[str, str]:
            return {
                "content-type": "application/json",
                **sign_request(
                    source.scheme, verify_context(settings, source.name), body, time.time()
                ),
            }

        with serve(create_app(settings), settings) as url:
            load = Load(url, sign)
            threads = [threading.Thread(target=load.worker, daemon=True) for _ in range(4)]
            for thread in threads:
                thread.start()

            def ok_since(t: float) -> int:
                return sum(1 for a in load.snapshot() if a[1] == 200 and a[0] > t)

            try:
                _wait(lambda: ok_since(0) >= 100, 60, "the first 100 acknowledgements")
                leader = cluster3.leader(raw, 0)
                killed_at = time.monotonic()
                cluster3.kill(leader)
                failover_s = _wait(lambda: ok_since(killed_at) >= 50, 60, "200s after failover")

                second = next(n for n in cluster3.node_ids if n != leader)
                cluster3.kill(second)
                below_isr_at = time.monotonic()
                time.sleep(6)
                below = [a for a in load.snapshot() if a[0] > below_isr_at + 1.0]
                assert below, "no answer while below min ISR"
                assert {a[1] for a in below} == {503}, Counter(a[1] for a in below)

                restarted_at = time.monotonic()
                for node in (leader, second):
                    cluster3.restart(node)
                _wait(lambda: ok_since(restarted_at) >= 50, 90, "200s after the restart")
                recovery_s = time.monotonic() - restarted_at
                _wait(lambda: _isr_whole(cluster3, raw), 90, "the ISR whole again")
                rejoin_s = time.monotonic() - restarted_at
            finally:
                load.stop.set()
                for thread in threads:
                    thread.join(timeout=15)

        answers = load.snapshot()
        statuses = Counter(a[1] for a in answers)
        assert set(statuses) <= {200, 503}, statuses
        acked = {a[2] for a in answers if a[1] == 200}
        in_raw = {m.event_id for m in read_topic(cluster3.bootstrap, raw, expect=len(acked))}
        missing_raw = acked - in_raw
        assert not missing_raw, f"{len(missing_raw)} acknowledged ids not in {raw}"
        out = Counter(
            r.event_id
            for r in read_topic(cluster3.bootstrap, ordered, expect=len(in_raw), timeout_s=180)
        )
        missing = acked - set(out)
        duplicates = sum(n - 1 for n in out.values())
        print(
            f"\n{prefix}: {len(answers)} requests ({statuses[200]} x 200, {statuses[503]} x 503); "
            f"200 again {failover_s:.1f} s after the leader died; {len(below)} answers below "
            f"min ISR, all 503; 50 x 200 again and the ISR whole {recovery_s:.1f} and "
            f"{rejoin_s:.1f} s after the restart began; .ordered: {len(out)} ids, "
            f"{len(missing)} acknowledged missing, {duplicates} duplicates"
        )
        assert not missing, f"{len(missing)} acknowledged ids not in {ordered}\n{stages.logs()}"
        assert duplicates == 0
        for proc in stages.started:
            assert proc.terminate() == 0
    finally:
        stages.close()
