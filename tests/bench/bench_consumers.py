"""Benchmark of the compactor and reorderer against the embedded broker (not a test).

    python -m tests.bench.bench_consumers [--events 200000] [--ids 1000000,10000000]

Each stage runs as the real process pinned to CPU 0; the broker, the load
generator and the reader share CPU 1. Prints a table:

- throughput: a pre-filled input topic drained by one stage (events/s consumed);
- added latency raw -> ordered beyond the reorder window at a steady 2,000 events/s
  (every event gets the same occurred_at, so each is released by its deadline,
  arrival + window; latency = seen on .ordered - sent - window);
- resident memory of the RocksDB dedup store per remembered id count.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from gateway.broker import EmbeddedBroker, free_port
from gateway.topics import TopicNames
from tests.consumer_support import (
    BASE_US,
    REPO,
    RawProducer,
    create_topics,
    envelope,
    load_settings,
    write_config,
)

WINDOW_S = 0.2


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def start_stage(stage: str, cfg: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                sys.executable,
                "-m",
                "gateway.cli",
                stage,
                "--config",
                str(cfg),
                "--metrics-port",
                str(port),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=out,
        )


def metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def drain_rate(stage: str, cfg: Path, total: int, log: Path) -> float:
    """Start a stage on a pre-filled input; events/s from its first to its last record."""
    port = free_port()
    proc = start_stage(stage, cfg, port, log)
    try:
        first_t = first_n = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            n = metric(port, "webhook_bridge_stage_consumed_total")
            now = time.monotonic()
            if n > 0 and first_t is None:
                first_t, first_n = now, n
            if n >= total and first_t is not None and first_n is not None:
                return (n - first_n) / max(now - first_t, 1e-9)
            time.sleep(0.05)
        raise RuntimeError(f"{stage} did not drain {total} events")
    finally:
        proc.terminate()
        proc.wait(60)


def latency(
    bootstrap: str, cfg: Path, prefix: str, rate: int, seconds: float, tmp: Path
) -> list[float]:
    from confluent_kafka import Consumer

    names = TopicNames(prefix)
    procs = [
        start_stage(s, cfg, free_port(), tmp / f"lat-{s}.log") for s in ("compactor", "reorderer")
    ]
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-reader",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": "6000",
            "heartbeat.interval.ms": "500",
            "fetch.wait.max.ms": "20",
        }
    )
    reader.subscribe([names.ordered("acme")])
    samples: list[float] = []
    expected = int(rate * seconds)
    try:
        time.sleep(6)  # both stages joined
        # Reader joins, then load starts.
        t_end = time.monotonic() + 20
        while not reader.assignment() and time.monotonic() < t_end:
            reader.poll(0.1)

        def send() -> None:
            producer = RawProducer(bootstrap)
            start = time.monotonic()
            for i in range(expected):
                env = envelope(f"lat-{time.time_ns()}-{i}", f"k{i % 100}", BASE_US)
                producer.send(names.raw("acme"), env)
                ahead = (i + 1) / rate - (time.monotonic() - start)
                if ahead > 0:
                    producer._producer.poll(0)
                    time.sleep(ahead)
            producer.flush()

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + seconds + 60
        while len(samples) < expected and time.monotonic() < deadline:
            msgs: list[Any] = reader.consume(1000, 0.1)
            for msg in msgs:
                if msg.error() is not None:
                    continue
                headers: Any = dict(msg.headers() or [])
                sent_ns = int(headers["ce_id"].split(b"-")[1])
                samples.append((time.time_ns() - sent_ns) / 1e9 - WINDOW_S)
        sender.join(10)
        return samples
    finally:
        reader.close()
        for proc in procs:
            proc.terminate()
            proc.wait(60)


RSS_SCRIPT = textwrap.dedent("""
    import resource, sys, time
    from consumers.state.dedup_store import RocksDedupStore, Seen
    store = RocksDedupStore(sys.argv[1])
    n, chunk = int(sys.argv[2]), 50_000
    t = time.monotonic()
    for start in range(0, n, chunk):
        store.write([(i % 3, b"evt_%028d" % i, Seen(i, 10**13 + i))
                     for i in range(start, min(n, start + chunk))], {0: start})
    took = time.monotonic() - t
    every = max(1, n // 10000)
    hits = sum(store.get(i % 3, b"evt_%028d" % i) is not None for i in range(0, n, every))
    t2 = time.monotonic()
    for i in range(0, n, max(1, n // 100000)):
        store.get(i % 3, b"evt_%028d" % i)
    lookups = min(n, 100000) / (time.monotonic() - t2)
    with open("/proc/self/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(rss // 1024, peak // 1024, round(took, 1), int(lookups), hits)
""")


def store_memory(n: int, tmp: Path) -> tuple[int, int, float, int, float]:
    path = tmp / f"rss-{n}"
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path), str(n)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    rss, peak, took, lookups, _ = out.stdout.split()
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    shutil.rmtree(path, ignore_errors=True)
    return int(rss), int(peak), float(took), int(lookups), disk


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events",
        type=int,
        default=200_000,
        help="distinct events pre-filled for the throughput runs",
    )
    parser.add_argument(
        "--duplicates",
        type=float,
        default=0.2,
        help="fraction of extra duplicate copies in the raw topic",
    )
    parser.add_argument(
        "--ids", default="1000000", help="comma-separated remembered-id counts for the memory runs"
    )
    parser.add_argument("--rate", type=int, default=2000, help="events/s in the latency run")
    parser.add_argument("--seconds", type=float, default=15.0, help="latency run length")
    parser.add_argument(
        "--latency-commit-ms",
        type=int,
        default=30,
        help="commit_interval_ms of both stages in the latency run",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-consumers-"))
    rows: list[tuple[str, str]] = []
    broker = EmbeddedBroker()
    broker.start()
    try:
        if (os.cpu_count() or 1) > 1 and broker.pid is not None:
            os.sched_setaffinity(broker.pid, {1})
        _pin(1)
        prefix = f"bench{os.getpid()}"
        cfg = write_config(
            tmp, broker.bootstrap, prefix, window_s=WINDOW_S, state_dir=str(tmp / "state")
        )
        create_topics(load_settings(cfg))
        names = TopicNames(prefix)
        producer = RawProducer(broker.bootstrap)
        copies = 0
        step = max(1, round(1 / args.duplicates)) if args.duplicates > 0 else 0
        for i in range(args.events):
            env = envelope(f"bench-{i}", f"k{i % 1000}", BASE_US + i * 100)
            producer.send(names.raw("acme"), env)
            copies += 1
            if step and i % step == 0:
                producer.send(names.raw("acme"), env)
                copies += 1
        producer.flush()
        compactor_rate = drain_rate("compactor", cfg, copies, tmp / "compactor.log")
        rows.append(
            (
                "compactor throughput (1 core)",
                f"{compactor_rate:,.0f} events/s ({copies:,} in, {args.events:,} out)",
            )
        )
        reorderer_rate = drain_rate("reorderer", cfg, args.events, tmp / "reorderer.log")
        rows.append(
            (
                "reorderer throughput (1 core)",
                f"{reorderer_rate:,.0f} events/s ({args.events:,} in)",
            )
        )

        lat_prefix = f"lat{os.getpid()}"
        lat_cfg = write_config(
            tmp,
            broker.bootstrap,
            lat_prefix,
            window_s=WINDOW_S,
            state_dir=str(tmp / "lat-state"),
            commit_interval_ms=args.latency_commit_ms,
        )
        create_topics(load_settings(lat_cfg))
        samples = latency(broker.bootstrap, lat_cfg, lat_prefix, args.rate, args.seconds, tmp)
        if samples:
            rows.append(
                (
                    f"added latency raw->ordered beyond the {WINDOW_S}s window",
                    f"p50 {pct(samples, 0.5) * 1000:.1f} ms, p99 "
                    f"{pct(samples, 0.99) * 1000:.1f} ms ({len(samples):,} events at "
                    f"{args.rate}/s, commit_interval_ms={args.latency_commit_ms})",
                )
            )
        for n in (int(x) for x in args.ids.split(",")):
            rss, peak, took, lookups, disk = store_memory(n, tmp)
            rows.append(
                (
                    f"RocksDB dedup store, {n:,} ids",
                    f"RSS {rss} MiB (peak {peak} MiB), {rss / (n / 1e6):.0f} MiB per "
                    f"million; disk {disk:.0f} MiB; load {took}s; {lookups:,} lookups/s",
                )
            )
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure'.ljust(width)} | result\n{'-' * width}-+-{'-' * 60}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")
    print(
        f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus, embedded broker; "
        f"bench peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
