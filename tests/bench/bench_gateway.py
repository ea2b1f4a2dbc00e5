"""Gateway benchmark: full path (verify, parse, Avro, produce, wait for the ack) against a
bare Starlette endpoint that only checks the same HMAC (the ceiling) and against a
naive peer (`peer_app.py`: Starlette + confluent-kafka, the raw body to Kafka with
acks=all, answered after the ack), under the same load in the same run.

Each server is pinned to core 0; wrk (64 connections, one thread) and the embedded
broker share core 1. Bodies are Jiko-like, about 600 bytes, each unique and signed
beforehand (Jiko has no event id, so the id is the body hash: unique bodies, unique
ids). Afterwards every acknowledged id must be in Kafka: the topic must hold at
least as many distinct ids of the measured run (warm-up bodies are marked and left
out) as wrk counted 2xx answers. wrk does not say which requests got a 2xx, so
this is a count; requests still in flight when wrk stops (at most one per
connection) may add ids that were never acknowledged.

    python -m tests.bench.bench_gateway [--duration 15] [--connections 64]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from deploy.broker import free_port
from deploy.topics import ensure_topics
from schemas.config import load
from schemas.topics import TopicSpec, implied_topics, names
from tests.bench.common import (
    REPO,
    BenchBroker,
    add_broker_argument,
    machine,
    pinned,
    python,
    stop,
    table,
    wait_http,
)
from tests.support import read_topic

SERVER_CORE, LOAD_CORE = 0, 1
LUA = os.path.join(REPO, "tests", "bench", "signed_requests.lua")


def jiko_body(index: int, run: str = "measured") -> bytes:
    document = {
        "event_type": "card.transaction.approved",
        "payload": {
            "id": f"txn_{uuid.uuid4().hex}",
            "card_id": f"card_{index % 500:05d}",
            "application_id": f"app_{index % 97:04d}",
            "amount": "1250.00",
            "currency": "USD",
            "merchant": {
                "name": "ACME Coffee Roasters",
                "mcc": "5814",
                "city": "New York",
                "country": "US",
            },
            "status": "approved",
            "network": "visa",
            "created_at": "2026-11-23T10:00:00.000000Z",
            "metadata": {
                "reference": uuid.uuid4().hex,
                "channel": "card_present",
                "note": "benchmark payload padded to the size of a real event",
                "bench_run": run,  # the Avro value holds the raw body: tells warm-up ids apart
                "descriptor": "ACME COFFEE ROASTERS NEW YORK NY 10001 US",
                "terminal_id": f"term_{index % 211:06d}",
                "authorization_code": f"{index % 999983:06d}",
            },
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()


def write_requests(path: Path, count: int, secret: bytes, run: str = "measured") -> int:
    size = 0
    with path.open("wb") as out:
        for i in range(count):
            body = jiko_body(i, run)
            size += len(body)
            sig = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest())
            out.write(sig + b"\t" + body + b"\n")
    return size // count


def run_wrk(url: str, requests_file: Path, duration_s: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(LOAD_CORE),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration_s}s",
            "--timeout",
            "10s",
            "-s",
            LUA,
            url,
            "--",
            str(requests_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(
        r"BENCH requests=(\d+) non2xx=(\d+) errors=(\d+) p50_us=(\d+) "
        r"p99_us=(\d+)",
        out,
    )
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None or rps is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    requests, non2xx, errors, p50, p99 = (int(g) for g in match.groups())
    return {
        "rps": float(rps.group(1)),
        "requests": requests,
        "non2xx": non2xx,
        "errors": errors,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bodies", type=int, default=250_000)
    add_broker_argument(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (make bench installs it: apt-get install wrk)")
    secret = secrets.token_urlsafe(24)
    os.environ["JIKO_WEBHOOK_SECRET"] = secret
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    broker = BenchBroker(args.broker)
    broker.start()
    broker.pin({LOAD_CORE})
    gateway_port, ceiling_port, peer_port = free_port(), free_port(), free_port()
    prefix = f"bench{int(time.time())}"
    config = work / "bench.toml"
    config.write_text(f"""
[bridge]
topic_prefix = "{prefix}"
log_level = "warning"
[kafka]
"bootstrap.servers" = "{broker.bootstrap}"
[topics]
partitions = 3
[gateway]
port = {gateway_port}
[sources.jiko]
scheme = "jiko"
secrets = ["JIKO_WEBHOOK_SECRET"]
""")
    settings = load(config)
    peer_topic = f"{prefix}.peer"
    ensure_topics(
        settings.admin_config(),
        [*implied_topics(settings), TopicSpec(peer_topic, settings.topics.partitions, 1)],
    )
    warmup, measured = work / "warmup.txt", work / "requests.txt"
    write_requests(warmup, 20_000, secret.encode(), run="warmup")
    body_size = write_requests(measured, args.bodies, secret.encode())
    results: dict[str, dict[str, float]] = {}
    try:
        for name, argv, port in (
            (
                "ceiling: bare Starlette + HMAC",
                python(
                    "-m",
                    "uvicorn",
                    "tests.bench.ceiling_app:app",
                    "--port",
                    str(ceiling_port),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ),
                ceiling_port,
            ),
            (
                "peer: naive Starlette + confluent-kafka",
                python(
                    "-m",
                    "uvicorn",
                    "tests.bench.peer_app:app",
                    "--port",
                    str(peer_port),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ),
                peer_port,
            ),
            (
                "gateway: full path to Kafka ack",
                python("-m", "deploy.cli", "gateway", "--config", str(config)),
                gateway_port,
            ),
        ):
            server = pinned(
                SERVER_CORE,
                argv,
                env={"PEER_BOOTSTRAP": broker.bootstrap, "PEER_TOPIC": peer_topic},
            )
            try:
                base = f"http://127.0.0.1:{port}"
                url = f"{base}/webhooks/jiko"
                wait_http(
                    f"{base}/healthz" if "gateway" in name else base, 30
                ) if "gateway" in name else time.sleep(3)
                run_wrk(url, warmup, 3, args.connections)
                results[name] = run_wrk(url, measured, args.duration, args.connections)
            finally:
                stop(server)
        gateway = results["gateway: full path to Kafka ack"]
        acknowledged = gateway["requests"] - gateway["non2xx"]
        keys = {  # the measured run's ids only: warm-up ids would hide a loss
            m.key()
            for m in read_topic(
                broker.bootstrap, names(settings).raw("jiko"), idle_s=3, timeout_s=600
            )
            if b'"bench_run":"warmup"' not in m.value()
        }
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    ceiling = results["ceiling: bare Starlette + HMAC"]
    rows = [
        (
            name,
            f"{r['rps']:.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            int(r["non2xx"]),
            int(r["errors"]),
        )
        for name, r in results.items()
    ]
    print(
        table(
            f"Gateway ({machine()}; {args.connections} connections, {args.duration}s, "
            f"~{body_size} B signed Jiko bodies; server on core {SERVER_CORE}, wrk and "
            f"{broker.name} on core {LOAD_CORE})",
            ["target", "req/s", "p50 ms", "p99 ms", "non-2xx", "socket errors"],
            rows,
        )
    )
    peer = results["peer: naive Starlette + confluent-kafka"]
    print(
        f"\ngateway / ceiling = {gateway['rps'] / ceiling['rps']:.2f}; "
        f"peer / ceiling = {peer['rps'] / ceiling['rps']:.2f}; "
        f"gateway / peer = {gateway['rps'] / peer['rps']:.2f} (goal >= 1.3); "
        f"gateway p99 {gateway['p99_ms']:.1f} ms (goal <= 30 ms), peer p99 {peer['p99_ms']:.1f} ms"
    )
    print(
        f"acknowledged (2xx): {acknowledged:.0f}; distinct measured ids in Kafka: {len(keys)} -> "
        + (
            "every acknowledged id is in Kafka"
            if len(keys) >= acknowledged
            else "MISSING ACKNOWLEDGED EVENTS"
        )
    )
    return 0 if len(keys) >= acknowledged else 1


if __name__ == "__main__":
    raise SystemExit(main())
