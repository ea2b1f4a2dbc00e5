"""Fan-out throughput and latency: `python -m tests.bench.bench_fanout [--events N]`.

Runs a real `webhook-bridge fanout` process pinned to CPU 0 and a minimal HTTP
receiver (uvicorn + httptools, answers 200 at once) pinned to CPU 1, against the
embedded broker (or KAFKA_BOOTSTRAP_SERVERS). Two measurements per sink type:

- backlog: N events already in `.ordered`, drained; deliveries/s between the first
  and the last delivery (HTTP: receiver clock; kafka: output record timestamps),
  and the fan-out's CPU time (user + system, /proc/PID/stat) per record between
  its first and last offset commit (the group's committed offsets, read from the
  broker every 50 ms): the robust figure on a shared machine, where wall-clock
  rates are noisy;
- paced: `--rate` events/s for `--seconds`; latency from the producer's send time
  to the receiver (HTTP) or to the output record's CreateTime (kafka), p50/p99.
  The fan-out's consumer runs with `--fetch-wait-ms` (10): with librdkafka's 500 ms
  default the embedded broker holds fetches and p50 is ~160 ms, whatever the sink.

Figures: `python -m tests.bench.bench_fanout --events 20000` (5000 is too short a
window for the kafka sink's CPU figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 6
SECRET = "whsec_YmVuY2gtc2lnbmluZy1rZXktMzItYnl0ZXMtbG9uZyE="


# ------------------------------------------------------------------ the receiver


def serve(port: int) -> None:
    import uvicorn

    stats: dict[str, Any] = {"count": 0, "first": 0.0, "last": 0.0, "lat": []}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            payload = json.dumps(stats).encode()
            stats.update(count=0, first=0.0, last=0.0, lat=[])
        else:
            now = time.time()
            stats["count"] += 1
            stats["first"] = stats["first"] or now
            stats["last"] = now
            if b'"sent"' in body:
                stats["lat"].append(now - json.loads(body)["sent"])
            payload = b"ok"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        lifespan="off",
    )


def stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


# ------------------------------------------------------------------ helpers


def pinned(cpu: int) -> Any:
    def pin() -> None:
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
            os.sched_setaffinity(0, {cpu})

    return pin


def start_receiver(port: int, **popen: Any) -> subprocess.Popen[bytes]:
    """The bench's receiver (`--serve PORT`) on core 1, once it answers."""
    receiver = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bench_fanout", "--serve", str(port)],
        preexec_fn=pinned(1),
        **popen,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            stats(port)
            return receiver
        except OSError:
            if time.monotonic() > deadline:
                receiver.kill()
                raise
            time.sleep(0.2)


def envelopes(n: int, start: int, paced: bool) -> Any:
    from schemas.envelope import Envelope, Verification

    now = int(time.time() * 1e6)
    for i in range(start, start + n):
        body = {"id": f"b{i}", "amount": i, "note": "x" * 200}
        if paced:
            body["sent"] = time.time()
        yield Envelope(
            event_id=f"b{i}",
            event_id_origin="PAYLOAD",
            provider="bench",
            source="bench",
            event_type="payment.created",
            occurred_at=now,
            occurred_at_origin="PAYLOAD",
            received_at=now,
            ordering_key=f"k{i % 500}",
            content_type="application/json",
            body=json.dumps(body).encode(),
            headers={},
            verification=Verification("none"),
            request_id="r",
        )


def produce(bootstrap: str, topic: str, n: int, start: int, rate: float = 0.0) -> None:
    from confluent_kafka import Producer

    from schemas.records import ce_headers
    from schemas.serde import EnvelopeSerializer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1 if rate else 20})
    serialize = EnvelopeSerializer()
    t0 = time.monotonic()
    for k, env in enumerate(envelopes(n, start, paced=bool(rate))):
        if rate:
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(
                    topic,
                    key=env.ordering_key.encode(),
                    value=serialize(env, topic),
                    headers=list[tuple[str, str | bytes | None]](ce_headers(env)),
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)


def write_config(
    path: Path, bootstrap: str, prefix: str, port: int, fetch_wait_ms: int, concurrency: int
) -> None:
    path.write_text(
        f"""
[bridge]
topic_prefix = "{prefix}"
log_level = "warning"
[kafka]
"bootstrap.servers" = "{bootstrap}"
[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"fetch.wait.max.ms" = "{fetch_wait_ms}"
[topics]
partitions = {PARTITIONS}
[sources.bench]
scheme = "none"
allow_unverified = true
[sinks.http]
type = "http"
url = "http://127.0.0.1:{port}/events"
secret = "BENCH_SECRET"
concurrency = {concurrency}
max_in_flight = 5000
[sinks.kafka]
type = "kafka"
topic = "{prefix}-out"
concurrency = {concurrency}
max_in_flight = 5000
""",
        encoding="utf-8",
    )


def committed(consumer: Any, topic: str, partitions: int) -> int:
    """Records the fan-out's group has committed on `topic` (read from the broker, so the
    measurement costs the fan-out nothing)."""
    from confluent_kafka import TopicPartition

    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 5)
    except Exception:
        return 0
    return sum(max(tp.offset, 0) for tp in tps)


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def consume_out(bootstrap: str, topic: str, expected: int, timeout_s: float) -> list[Any]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-reader", "enable.auto.commit": False}
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is not None and meta.error is None and meta.partitions:
                break
            if time.monotonic() > deadline:
                return []
            time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        out: list[Any] = []
        while len(out) < expected and time.monotonic() < deadline:
            out += [m for m in consumer.consume(1000, 0.5) if m.error() is None]
        return out
    finally:
        consumer.close()


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    from tests.bench.common import BenchBroker, add_broker_argument

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=10,
        help="the fan-out consumer's fetch.wait.max.ms (librdkafka default 500): the embedded "
        "broker was seen to hold a fetch until it expires, which then dominates paced latency",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="both sinks' concurrency (attempts in flight; 64 is the default of a sink)",
    )
    parser.add_argument(
        "--sinks",
        default="http,kafka",
        help="which sink types to measure, comma-separated (default: http,kafka)",
    )
    parser.add_argument(
        "--latencies", help="write the HTTP sink's paced latencies (s, arrival order) here"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    sys.path.insert(0, str(REPO))
    from deploy.broker import free_port
    from deploy.topics import ensure_topics
    from schemas.config import load
    from schemas.topics import TopicSpec, implied_topics

    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = BenchBroker(args.broker)
        bootstrap = broker.start()
    port = free_port()
    prefix = f"bench{int(time.time())}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "BENCH_SECRET": SECRET}
    procs: list[subprocess.Popen[bytes]] = []
    rows: list[tuple[str, ...]] = []
    try:
        procs.append(start_receiver(port, cwd=REPO, env=env))
        for sink in [s for s in ("http", "kafka") if s in args.sinks.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                config = Path(tmp) / "bench.toml"
                write_config(
                    config, bootstrap, f"{prefix}{sink}", port, args.fetch_wait_ms, args.concurrency
                )
                topic = f"{prefix}{sink}.bench.ordered"
                # every topic the config implies (DLQs too) and the kafka sink's: nothing
                # is auto-created
                # (once each: Apache Kafka refuses a request that names a topic twice)
                settings = load(config, env={**os.environ, "BENCH_SECRET": SECRET})
                specs = {
                    spec.name: spec
                    for spec in (
                        TopicSpec(topic, PARTITIONS, 1),
                        TopicSpec(f"{prefix}{sink}-out", PARTITIONS, 1),
                        *implied_topics(settings),
                    )
                }
                ensure_topics({"bootstrap.servers": bootstrap}, list(specs.values()))
                produce(bootstrap, topic, args.events, 0)
                if sink == "http":
                    stats(port)  # reset
                fan = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "deploy.cli",
                        "fanout",
                        "--config",
                        str(config),
                        "--sink",
                        sink,
                        "--metrics-port",
                        "0",
                    ],
                    cwd=REPO,
                    env=env,
                    preexec_fn=pinned(0),
                )
                procs.append(fan)
                started = time.monotonic()
                rows.append(
                    measure(
                        sink,
                        bootstrap,
                        port,
                        topic,
                        f"{prefix}{sink}-out",
                        args,
                        CpuWindow(fan.pid, bootstrap, f"{prefix}{sink}.fanout.{sink}", topic),
                    )
                )
                print(f"{sink}: {rows[-1]} in {time.monotonic() - started:.0f} s", flush=True)
                fan.terminate()
                fan.wait(30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if broker is not None:
            broker.stop()
    print(
        f"\nfan-out benchmark ({args.events} events backlog; paced {args.rate:.0f}/s for "
        f"{args.seconds:.0f} s; fetch.wait.max.ms {args.fetch_wait_ms}; "
        f"concurrency {args.concurrency}; "
        f"{broker.name if broker is not None else 'broker at ' + bootstrap}; "
        "fan-out pinned to CPU 0, receiver to CPU 1)"
    )
    print(
        f"{'sink':<8}{'backlog deliveries/s':>22}{'CPU us/delivery':>17}"
        f"{'paced p50 ms':>15}{'paced p99 ms':>15}"
    )
    for row in rows:
        print(f"{row[0]:<8}{row[1]:>22}{row[2]:>17}{row[3]:>15}{row[4]:>15}")
    return 0


class CpuWindow:
    """The fan-out's CPU seconds between its first offset commit and its last one."""

    def __init__(self, pid: int, bootstrap: str, group: str, topic: str) -> None:
        self.pid = pid
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.start: tuple[int, float] | None = None
        self.end: tuple[int, float] | None = None

    def run(self, n: int, timeout_s: float) -> None:
        """Sample every 50 ms until the fan-out committed `n` records."""
        from confluent_kafka import Consumer

        reader = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                count = committed(reader, self.topic, PARTITIONS)
                cpu = cpu_seconds(self.pid)
                if count > 0 and self.start is None:
                    self.start = (count, cpu)
                elif count > 0 and (self.end is None or count > self.end[0]):
                    self.end = (count, cpu)
                if count >= n:
                    return
                time.sleep(0.05)
        finally:
            reader.close()

    def per_delivery_us(self) -> str:
        if self.start is None or self.end is None or self.end[0] <= self.start[0]:
            return "n/a"
        cpu = self.end[1] - self.start[1]
        return f"{cpu / (self.end[0] - self.start[0]) * 1e6:,.0f}"


def measure(
    sink: str,
    bootstrap: str,
    port: int,
    topic: str,
    out_topic: str,
    args: argparse.Namespace,
    window: CpuWindow,
) -> tuple[str, ...]:
    n = args.events
    paced_n = int(args.rate * args.seconds)
    window.run(n, 300)
    if sink == "http":
        deadline = time.monotonic() + 300
        total, first, last = 0, 0.0, 0.0
        while total < n and time.monotonic() < deadline:
            time.sleep(0.05)
            s = stats(port)
            total += s["count"]
            first = first or s["first"]
            last = s["last"] or last
        rate = (total - 1) / (last - first) if last > first else 0.0
        produce(bootstrap, topic, paced_n, n, rate=args.rate)
        time.sleep(2.0)
        lat = stats(port)["lat"]
        if args.latencies:  # in arrival order: a queue that grows shows as a rising line
            Path(args.latencies).write_text(json.dumps(lat), encoding="utf-8")
    else:
        records = consume_out(bootstrap, out_topic, n, 300)
        stamps = sorted(m.timestamp()[1] for m in records)
        rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000) if len(stamps) > 1 else 0
        produce(bootstrap, topic, paced_n, n, rate=args.rate)
        sent = [
            (m.timestamp()[1] / 1000, json.loads(_body(m.value())).get("sent"))
            for m in consume_out(bootstrap, out_topic, n + paced_n, 120)
        ]
        lat = [at - t for at, t in sent if t is not None]
    return (
        sink,
        f"{rate:,.0f}",
        window.per_delivery_us(),
        f"{percentile(lat, 0.5) * 1000:.1f}",
        f"{percentile(lat, 0.99) * 1000:.1f}",
    )


def _body(value: bytes) -> bytes:
    from schemas.serde import EnvelopeDeserializer

    return EnvelopeDeserializer()(value).body


if __name__ == "__main__":
    raise SystemExit(main())
