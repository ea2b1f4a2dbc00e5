"""Benchmark of the compactor and reorderer on Apache Kafka or the embedded broker (not a test).

    python -m tests.bench.bench_consumers [--events 200000] [--ids 1000000,10000000]
        [--only throughput,latency,memory] [--windows 0.2,0] [--rate 2000]

Each stage runs as the real process pinned to CPU 0; the broker, the load
generator and the reader share CPU 1 (other work on the machine shares both, so
CPU seconds per event are printed beside every wall-clock rate). Prints a table:

- throughput: a pre-filled input topic drained by one stage (events/s consumed,
  from its first to its last record; CPU microseconds of the stage per event);
- added latency raw -> ordered at a steady ``--rate`` (default 2,000 events/s),
  for each reorder window in ``--windows``. Both stages must be ready
  (``/readyz``) and a one-second warm-up must have come out of ``.ordered``
  before the measured events are sent. Each event carries its produce time
  (``time.time_ns()``, in its id); the reader (read_committed, like a real
  downstream consumer) takes its arrival time when the record comes out of
  ``consume``. Every event gets the same occurred_at, so none can be released
  early by the watermark: each waits in the reorderer exactly until its
  deadline, its arrival at the reorderer + the window. So
  ``added = arrival at the reader - produce time - window``: the time spent in
  the pipeline (producer linger, two fetches, two transactions, commit
  visibility, the release tick) that is not the window itself. ``window
  honoured`` prints the smallest ``arrival - produce time``, which must be at
  least the window. A run with window 0 measures the same without the buffer.
  Each run gets a fresh broker (``--shared-broker``: reuse the throughput
  runs'): the embedded broker's CPU per read_committed fetch grows with the log
  it holds (3,000 transactions of 20 records with one read_committed reader
  took its CPU per transaction from about 1 ms to 17 ms; Apache Kafka serves a
  fetch from an offset index), and it shares CPU 1 with the load generator, so
  on it latency drifts upward the longer a run lasts.
- resident memory of the RocksDB dedup store per remembered id count: the ids
  are loaded through `RocksDedupStore.write` (the path restore and commits use)
  in 50,000-id batches, then RSS is read after the load and again after a
  lookup phase (hits and misses).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.broker import free_port
from schemas.topics import TopicNames
from tests.bench.common import BenchBroker, add_broker_argument
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
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_stage(stage: str, cfg: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                sys.executable,
                "-m",
                "deploy.cli",
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


def ready(port: int) -> bool:
    try:
        return bool(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status)
    except OSError:
        return False


def drain_rate(stage: str, cfg: Path, total: int, log: Path) -> tuple[float, float]:
    """Start a stage on a pre-filled input: events/s from its first to its last record,
    and the stage's CPU microseconds per event over the same span."""
    port = free_port()
    proc = start_stage(stage, cfg, port, log)
    try:
        first_t = first_n = None
        first_cpu = 0.0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            n = metric(port, "webhook_bridge_stage_consumed_total")
            now = time.monotonic()
            if n > 0 and first_t is None:
                first_t, first_n, first_cpu = now, n, cpu_seconds(proc.pid)
            if n >= total and first_t is not None and first_n is not None:
                cpu = cpu_seconds(proc.pid) - first_cpu
                done = max(n - first_n, 1.0)
                return done / max(now - first_t, 1e-9), cpu / done * 1e6
            time.sleep(0.05)
        raise RuntimeError(f"{stage} did not drain {total} events")
    finally:
        proc.terminate()
        proc.wait(60)


@dataclass
class LatencyRun:
    window_s: float
    added: list[float]  # seconds beyond the window, one per measured event
    min_total: float  # smallest arrival - produce time (>= window when honoured)
    sent: int
    cpu_us: dict[str, float]  # stage -> CPU microseconds per event during the run
    transactions: dict[str, str]  # stage -> its transactions over the whole run, in words


def stage_transactions(port: int) -> str:
    """A stage's transactions so far, from its /metrics: how many, records per
    transaction, mean time from begin to commit and of the commit protocol alone."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        for name in (
            "webhook_bridge_stage_transaction_duration_seconds_count",
            "webhook_bridge_stage_transaction_duration_seconds_sum",
            "webhook_bridge_stage_commit_duration_seconds_sum",
            "webhook_bridge_stage_consumed_total",
        ):
            if line.startswith(name + "{"):
                sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    count = sums.get("webhook_bridge_stage_transaction_duration_seconds_count", 0.0)
    if not count:
        return "no transaction"
    per = sums.get("webhook_bridge_stage_consumed_total", 0.0) / count
    txn_ms = sums["webhook_bridge_stage_transaction_duration_seconds_sum"] / count * 1000
    commit_ms = sums.get("webhook_bridge_stage_commit_duration_seconds_sum", 0.0) / count * 1000
    return (
        f"{count:.0f} txns, {per:.0f} records/txn, "
        f"{txn_ms:.0f} ms each ({commit_ms:.0f} committing)"
    )


def latency(
    bootstrap: str, cfg: Path, prefix: str, rate: int, seconds: float, window_s: float, tmp: Path
) -> LatencyRun:
    from confluent_kafka import Consumer

    names = TopicNames(prefix)
    ports = {s: free_port() for s in ("compactor", "reorderer")}
    procs = {s: start_stage(s, cfg, ports[s], tmp / f"lat-{prefix}-{s}.log") for s in ports}
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{prefix}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": "6000",
            "heartbeat.interval.ms": "500",
            "fetch.wait.max.ms": "20",  # as the stages: each fetch costs the embedded broker
        }
    )
    reader.subscribe([names.ordered("acme")])
    warmup = rate  # one second of load, not measured
    measured = int(rate * seconds)
    received: dict[str, float] = {}  # event id -> seconds from produce to arrival
    try:
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end and not (
            all(ready(p) for p in ports.values()) and reader.assignment()
        ):
            reader.poll(0.1)

        producer = RawProducer(bootstrap)  # one producer: connected during the warm-up

        def send(tag: str, count: int) -> None:
            start = time.monotonic()
            for i in range(count):
                env = envelope(f"{tag}-{time.time_ns()}-{i}", f"k{i % 100}", BASE_US)
                producer.send(names.raw("acme"), env)
                ahead = (i + 1) / rate - (time.monotonic() - start)
                producer._producer.poll(0)
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush()

        def read_until(tag: str, count: int, timeout: float) -> int:
            got = 0
            deadline = time.monotonic() + timeout
            while got < count and time.monotonic() < deadline:
                msgs: list[Any] = reader.consume(1000, 0.05)
                now_ns = time.time_ns()
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    event_id = dict(msg.headers() or [])["ce_id"].decode()
                    parts = event_id.split("-")
                    if parts[0] == tag:
                        got += 1
                        received[event_id] = (now_ns - int(parts[1])) / 1e9
            return got

        sender = threading.Thread(target=send, args=("warm", warmup), daemon=True)
        sender.start()
        read_until("warm", warmup, 60)
        sender.join(10)
        received.clear()
        cpu0 = {s: cpu_seconds(p.pid) for s, p in procs.items()}
        sender = threading.Thread(target=send, args=("lat", measured), daemon=True)
        sender.start()
        read_until("lat", measured, seconds + 60)
        sender.join(10)
        cpu = {s: (cpu_seconds(p.pid) - cpu0[s]) / max(1, measured) * 1e6 for s, p in procs.items()}
        transactions = {s: stage_transactions(port) for s, port in ports.items()}
        totals = list(received.values())
        return LatencyRun(
            window_s,
            [t - window_s for t in totals],
            min(totals, default=float("nan")),
            measured,
            cpu,
            transactions,
        )
    finally:
        reader.close()
        for proc in procs.values():
            proc.terminate()
            proc.wait(60)


RSS_SCRIPT = textwrap.dedent("""
    import resource, sys, time
    from consumers.state.dedup_store import RocksDedupStore, Seen

    def rss():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) // 1024

    base = rss()
    store = RocksDedupStore(sys.argv[1])
    n, chunk = int(sys.argv[2]), 50_000
    t = time.monotonic()
    for start in range(0, n, chunk):
        store.write([(i % 3, b"evt_%028d" % i, Seen(i, 10**13 + i))
                     for i in range(start, min(n, start + chunk))], {0: start})
    took = time.monotonic() - t
    after_load = rss()
    step = max(1, n // 100_000)
    t2 = time.monotonic()
    hits = sum(store.get(i % 3, b"evt_%028d" % i) is not None for i in range(0, n, step))
    misses = sum(store.get(i % 3, b"new_%028d" % i) is None for i in range(0, n, step))
    lookups = (hits + misses) / (time.monotonic() - t2)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(base, after_load, rss(), peak, round(took, 1), int(lookups), hits + misses)
""")


@dataclass
class StoreRun:
    ids: int
    base: int  # MiB RSS of the interpreter before the store opens
    after_load: int
    after_lookups: int
    peak: int
    load_s: float
    lookups_per_s: int
    disk_mib: float


def store_memory(n: int, tmp: Path) -> StoreRun:
    path = tmp / f"rss-{n}"
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path), str(n)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    base, after_load, after_lookups, peak, took, lookups, _ = out.stdout.split()
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    shutil.rmtree(path, ignore_errors=True)
    return StoreRun(
        n,
        int(base),
        int(after_load),
        int(after_lookups),
        int(peak),
        float(took),
        int(lookups),
        disk,
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
        "--windows",
        default=f"{WINDOW_S},0",
        help="comma-separated reorder windows (s) for the latency runs",
    )
    parser.add_argument(
        "--latency-commit-ms",
        type=int,
        default=100,
        help="commit_interval_ms of both stages in the latency run (an upper bound: "
        "a stage commits as soon as its input has nothing more ready)",
    )
    parser.add_argument(
        "--shared-broker",
        action="store_true",
        help="run the latency runs on the throughput runs' broker instead of a fresh one",
    )
    parser.add_argument(
        "--only",
        default="throughput,latency,memory",
        help="comma-separated parts to run: throughput, latency, memory",
    )
    add_broker_argument(parser)
    args = parser.parse_args()
    parts = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-consumers-"))
    all_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    rows: list[tuple[str, str]] = []
    broker = BenchBroker(args.broker)
    broker.start()
    try:
        if (os.cpu_count() or 1) > 1:
            broker.pin({1})
        _pin(1)
        if "throughput" in parts:
            rows += throughput(broker.bootstrap, args.events, args.duplicates, tmp)
        if "latency" in parts:
            for window in (float(w) for w in args.windows.split(",")):
                # A fresh broker per run: the embedded broker's read_committed fetch
                # costs CPU that grows with what it holds (see the module docstring).
                lat_broker = broker if args.shared_broker else BenchBroker(args.broker)
                if lat_broker is not broker:
                    # Started unpinned: the broker sizes its thread pool by the CPUs it
                    # may use at start, and on one thread it stalls for seconds.
                    if hasattr(os, "sched_setaffinity"):
                        os.sched_setaffinity(0, all_cpus)
                    lat_broker.start()
                    _pin(1)
                    if (os.cpu_count() or 1) > 1:
                        lat_broker.pin({1})
                try:
                    lat_prefix = f"lat{os.getpid()}w{int(window * 1000)}"
                    lat_cfg = write_config(
                        tmp,
                        lat_broker.bootstrap,
                        lat_prefix,
                        window_s=window,
                        state_dir=str(tmp / f"{lat_prefix}-state"),
                        commit_interval_ms=args.latency_commit_ms,
                    )
                    create_topics(load_settings(lat_cfg))
                    run = latency(
                        lat_broker.bootstrap,
                        lat_cfg,
                        lat_prefix,
                        args.rate,
                        args.seconds,
                        window,
                        tmp,
                    )
                finally:
                    if lat_broker is not broker:
                        lat_broker.stop()
                if not run.added:
                    rows.append((f"added latency, window {window}s", "no events came out"))
                    continue
                ms = [x * 1000 for x in run.added]
                rows.append(
                    (
                        f"added latency raw->ordered beyond a {window}s window",
                        f"p50 {pct(ms, 0.5):.1f} ms, p90 {pct(ms, 0.9):.1f} ms, p99 "
                        f"{pct(ms, 0.99):.1f} ms, max {max(ms):.1f} ms ({len(ms):,}/"
                        f"{run.sent:,} events at {args.rate}/s, commit_interval_ms="
                        f"{args.latency_commit_ms}); window honoured: min raw->ordered "
                        f"{run.min_total * 1000:.1f} ms; CPU per event: "
                        + ", ".join(f"{s} {us:.0f} us" for s, us in run.cpu_us.items())
                        + "; "
                        + "; ".join(f"{s}: {t}" for s, t in run.transactions.items()),
                    )
                )
        if "memory" in parts:
            for n in (int(x) for x in args.ids.split(",")):
                r = store_memory(n, tmp)
                rows.append(
                    (
                        f"RocksDB dedup store, {n:,} ids",
                        f"RSS after load {r.after_load} MiB, after lookups {r.after_lookups} "
                        f"MiB ({r.after_lookups / (n / 1e6):.1f} MiB per million; "
                        f"{(r.after_lookups - r.base) / (n / 1e6):.1f} MiB per million over "
                        f"the bare interpreter's {r.base} MiB; peak {r.peak} MiB); disk "
                        f"{r.disk_mib:.0f} MiB; load {r.load_s}s "
                        f"({n / max(r.load_s, 1e-9):,.0f} ids/s); {r.lookups_per_s:,} lookups/s",
                    )
                )
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    width = max((len(r[0]) for r in rows), default=10)
    print(f"\nconsumer stages on {broker.name}")
    print(f"\n{'measure'.ljust(width)} | result\n{'-' * width}-+-{'-' * 60}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")
    print(
        f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus, {broker.name}; "
        f"load average {os.getloadavg()[0]:.2f}; "
        f"bench peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB)"
    )
    return 0


def throughput(bootstrap: str, events: int, duplicates: float, tmp: Path) -> list[tuple[str, str]]:
    prefix = f"bench{os.getpid()}"
    cfg = write_config(tmp, bootstrap, prefix, window_s=WINDOW_S, state_dir=str(tmp / "state"))
    create_topics(load_settings(cfg))
    names = TopicNames(prefix)
    producer = RawProducer(bootstrap)
    copies = 0
    step = max(1, round(1 / duplicates)) if duplicates > 0 else 0
    for i in range(events):
        env = envelope(f"bench-{i}", f"k{i % 1000}", BASE_US + i * 100)
        producer.send(names.raw("acme"), env)
        copies += 1
        if step and i % step == 0:
            producer.send(names.raw("acme"), env)
            copies += 1
    producer.flush()
    rows = []
    rate, cpu = drain_rate("compactor", cfg, copies, tmp / "compactor.log")
    rows.append(
        (
            "compactor throughput (1 core)",
            f"{rate:,.0f} events/s, {cpu:.1f} CPU us/event ({copies:,} in, {events:,} out)",
        )
    )
    rate, cpu = drain_rate("reorderer", cfg, events, tmp / "reorderer.log")
    rows.append(
        (
            "reorderer throughput (1 core)",
            f"{rate:,.0f} events/s, {cpu:.1f} CPU us/event ({events:,} in)",
        )
    )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
