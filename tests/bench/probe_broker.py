"""What one transaction and one hop cost on the broker (Apache Kafka or embedded; not a test).

    python -m tests.bench.probe_broker [--transactions 200] [--hops 60]

The floor under the stages' added latency: a transactional producer runs the
stages' commit protocol (begin, produce, flush, produce a changelog record, send
offsets, flush, commit) on a fresh broker, timed per phase; then single records
are produced and read back by a consumer with each ``fetch.wait.max.ms`` in
``--fetch-waits`` (the embedded broker can hold a fetch for that long).
"""

from __future__ import annotations

import argparse
import time

from deploy.topics import ensure_topics
from schemas.topics import TopicSpec
from tests.bench.common import BenchBroker, add_broker_argument, broker_config, machine


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main(argv: list[str] | None = None) -> int:
    from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=200)
    parser.add_argument("--hops", type=int, default=60)
    parser.add_argument("--fetch-waits", default="20,100,500")
    parser.add_argument(
        "--retry-backoff-ms",
        type=int,
        default=None,
        help="the producer's retry.backoff.ms (default: the stages' own setting)",
    )
    add_broker_argument(parser)
    args = parser.parse_args(argv)

    with BenchBroker(args.broker, broker_config(args)) as broker:
        bootstrap = broker.bootstrap
        ensure_topics(
            {"bootstrap.servers": bootstrap},
            [TopicSpec(name, 1, 1) for name in ("probe-in", "probe-out", "probe-state")],
        )
        group = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
        conf: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            "transactional.id": "probe",
            "linger.ms": 0,
        }
        if args.retry_backoff_ms is not None:
            conf["retry.backoff.ms"] = args.retry_backoff_ms
        producer = Producer(conf)
        producer.init_transactions(30)
        phases: dict[str, list[float]] = {"flush outputs": [], "offsets + state": [], "commit": []}
        totals: list[float] = []
        for i in range(args.transactions):
            t0 = time.perf_counter()
            producer.begin_transaction()
            producer.produce("probe-out", key=b"k", value=b"v" * 500)
            producer.flush(30)
            t1 = time.perf_counter()
            producer.produce("probe-state", key=b"k", value=b"s", partition=0)
            producer.send_offsets_to_transaction(
                [TopicPartition("probe-in", 0, i)], group.consumer_group_metadata(), 30
            )
            producer.flush(30)
            t2 = time.perf_counter()
            producer.commit_transaction(30)
            t3 = time.perf_counter()
            phases["flush outputs"].append((t1 - t0) * 1000)
            phases["offsets + state"].append((t2 - t1) * 1000)
            phases["commit"].append((t3 - t2) * 1000)
            totals.append((t3 - t0) * 1000)
        group.close()

        print(f"{broker.name} probe ({machine()})")
        print(f"one transaction, {args.transactions} runs (ms):")
        for name, values in (*phases.items(), ("total", totals)):
            print(f"  {name:<16} p50 {pct(values, 0.5):6.1f}   p99 {pct(values, 0.99):6.1f}")

        plain = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        print(f"one hop, produce -> consumer (ms, {args.hops} single records):")
        for wait_ms in (int(w) for w in args.fetch_waits.split(",")):
            reader = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": f"probe-reader-{wait_ms}",
                    "fetch.wait.max.ms": wait_ms,
                }
            )
            reader.assign([TopicPartition("probe-in", 0, OFFSET_END)])
            for _ in range(10):
                reader.poll(0.1)
            hops: list[float] = []
            for _ in range(args.hops):
                time.sleep(0.013)
                started = time.perf_counter()
                plain.produce("probe-in", value=b"x")
                plain.flush(10)
                while time.perf_counter() - started < 3:
                    message = reader.poll(0.5)
                    if message is not None and message.error() is None:
                        break
                hops.append((time.perf_counter() - started) * 1000)
            reader.close()
            print(
                f"  fetch.wait.max.ms {wait_ms:<4} p50 {pct(hops, 0.5):6.1f}   "
                f"p99 {pct(hops, 0.99):6.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
