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

    python -m tests.bench.bench_gateway [--duration 10] [--rounds 3] [--workers 1,2]
    python -m tests.bench.bench_gateway --targets gateway --rounds 3 \
        --variant before=/tmp/ab/base --variant after=.      # A/B, back to back
    python -m tests.bench.bench_gateway --targets peer,gateway --workers 1,2

Every run also prints the server's CPU per request (its process and any workers, all
threads, librdkafka's included), which varies less than req/s on a shared machine.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import secrets
import shutil
import statistics
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
    thread_seconds,
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
    """One wrk run; with its own CPU per request (`wrk_us`), which shares the load core
    with the broker."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child waited for
    wrk_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "wrk_us": wrk_s * 1e6 / max(1, requests),
        "rps": float(rps.group(1)),
        "requests": requests,
        "non2xx": non2xx,
        "errors": errors,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of every descendant (the workers of
    `--workers N`), all threads included, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo += parents.get(current, [])
    return total


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process, by thread name, user and system time apart
    (librdkafka names its threads rdk:main, rdk:broker<N>, ...; threads of one name are
    added up)."""
    out: dict[str, float] = {}
    for (name, _tid), seconds in thread_seconds(pid, split=True).items():
        name = re.sub(r"\d+$", "N", name) if name.startswith("rdk:broker") else name
        out[name] = out.get(name, 0.0) + seconds
    return out


def gateway_means(base: str) -> dict[str, float]:
    """Mean publish and request durations in ms from the gateway's /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        for metric in ("publish", "request"):
            name = f"webhook_bridge_gateway_{metric}_duration_seconds"
            if line.startswith((f"{name}_sum", f"{name}_count")) and (
                metric == "request" or 'outcome="acknowledged"' in line
            ):
                kind = "sum" if line.startswith(f"{name}_sum") else "count"
                key = f"{metric}_{kind}"
                sums[key] = sums.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return {
        f"{m}_ms": sums.get(f"{m}_sum", 0.0) / max(1.0, sums.get(f"{m}_count", 0.0)) * 1e3
        for m in ("publish", "request")
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bodies", type=int, default=250_000)
    parser.add_argument(
        "--targets",
        default="ceiling,peer,gateway",
        help="comma-separated, in the order run each round: ceiling, peer, gateway",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="run every target this often, interleaved; medians are printed (one round on "
        "this shared 2-core machine swings by a third from run to run)",
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="gateway worker counts to run, comma-separated (1: pinned to core 0 like the "
        "others; N > 1: `gateway --workers N` on every core, sharing them with wrk and "
        "the broker)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=CHECKOUT[,VAR=VALUE...]",
        help="A/B: run the gateway from this checkout (a folder with gateway/ and schemas/, "
        "e.g. from `git archive REV`, or `.`) as well, under NAME, with these environment "
        "variables (e.g. BRIDGE_KAFKA_PRODUCER_LINGER_MS=0); repeatable. Variants run back "
        "to back in every round, in the order given; the default is this checkout alone",
    )
    parser.add_argument(
        "--threads", action="store_true", help="also print each server thread's CPU per request"
    )
    parser.add_argument(
        "--profile",
        metavar="PY_SPY",
        help="record each gateway run with this py-spy (collapsed stacks) into "
        "/tmp/bench-profile-<run>.txt; the figures of such a run are not comparable",
    )
    add_broker_argument(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (make bench installs it: apt-get install wrk)")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    worker_counts = [int(w) for w in args.workers.split(",")]
    variants: list[tuple[str, str, dict[str, str]]] = [("gateway", REPO, {})]
    if args.variant:
        variants = []
        for variant in args.variant:
            name, rest = variant.split("=", 1)
            checkout, *assignments = rest.split(",")
            env = dict(a.split("=", 1) for a in assignments)
            variants.append((name, os.path.abspath(checkout), env))
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

    def uvicorn_app(app: str, port: int) -> list[str]:
        return python(
            "-m",
            "uvicorn",
            app,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--no-access-log",
        )

    # (label, argv, port, cores, checkout, its environment, run marker of its bodies or "")
    plan: list[tuple[str, list[str], int, str, str, dict[str, str], str]] = []
    for _ in range(args.rounds):
        for target in targets:
            if target == "ceiling":
                plan.append(
                    (
                        "ceiling: bare Starlette + HMAC",
                        uvicorn_app("tests.bench.ceiling_app:app", ceiling_port),
                        ceiling_port,
                        str(SERVER_CORE),
                        REPO,
                        {},
                        "",
                    )
                )
            elif target == "peer":
                plan.append(
                    (
                        "peer: naive Starlette + confluent-kafka",
                        uvicorn_app("tests.bench.peer_app:app", peer_port),
                        peer_port,
                        str(SERVER_CORE),
                        REPO,
                        {},
                        "",
                    )
                )
            elif target == "gateway":
                for workers in worker_counts:
                    for name, checkout, variant_env in variants:
                        cores = str(SERVER_CORE) if workers == 1 else f"{SERVER_CORE},{LOAD_CORE}"
                        label = f"{name}: full path to Kafka ack" + (
                            f", {workers} workers on cores {cores}" if workers > 1 else ""
                        )
                        # the CLI moved to the deploy package; older checkouts have it in gateway
                        cli = (
                            "deploy.cli"
                            if os.path.exists(os.path.join(checkout, "deploy", "cli.py"))
                            else "gateway.cli"
                        )
                        argv = python("-m", cli, "gateway", "--config", str(config)) + (
                            ["--workers", str(workers)] if workers > 1 else []
                        )
                        plan.append(
                            (
                                label,
                                argv,
                                gateway_port,
                                cores,
                                checkout,
                                variant_env,
                                f"m{len(plan)}",
                            )
                        )
            else:
                raise SystemExit(f"unknown target {target!r}")
    runs: list[tuple[str, str, dict[str, float]]] = []  # (label, run marker, figures)
    warm = False  # whether a run has warmed the broker up yet
    try:
        for label, argv, port, cores, checkout, variant_env, marker in plan:
            server = pinned(
                cores,
                argv,
                env={
                    "PEER_BOOTSTRAP": broker.bootstrap,
                    "PEER_TOPIC": peer_topic,
                    "PYTHONPATH": checkout,
                    **variant_env,
                },
                cwd=checkout,
            )
            try:
                base = f"http://127.0.0.1:{port}"
                url = f"{base}/webhooks/jiko"
                if marker:
                    wait_http(f"{base}/healthz", 30)
                else:
                    time.sleep(3)
                # A fresh broker runs interpreted for its first seconds (the JVM compiles its
                # hot paths as it goes: 150-250 us of broker CPU per request instead of
                # 25-80): the first run that talks to it warms it up for longer, so that no
                # target is measured against a cold broker.
                broker_run = not label.startswith("ceiling")
                run_wrk(url, warmup, 3 if warm or not broker_run else 20, args.connections)
                warm = warm or broker_run
                bodies = measured
                if marker:  # fresh bodies: each gateway run's ids are counted apart
                    bodies = work / f"{marker}.txt"
                    write_requests(bodies, args.bodies, secret.encode(), run=marker)
                cpu_before, threads_before = cpu_seconds(server.pid), thread_cpu(server.pid)
                broker_before = sum(cpu_seconds(pid) for pid in broker.pids())
                spy = None
                if args.profile and marker:
                    spy = subprocess.Popen(
                        [
                            *("taskset", "-c", str(LOAD_CORE), args.profile, "record"),
                            *("--pid", str(server.pid), "--format", "raw", "--rate", "250"),
                            *("--duration", str(args.duration), "--subprocesses"),
                            *("--output", f"/tmp/bench-profile-{marker}.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                figures = run_wrk(url, bodies, args.duration, args.connections)
                if spy is not None:
                    spy.wait()
                per_request = 1e6 / max(1, figures["requests"])
                figures["cpu_us"] = (cpu_seconds(server.pid) - cpu_before) * per_request
                broker_s = sum(cpu_seconds(pid) for pid in broker.pids()) - broker_before
                figures["broker_us"] = broker_s * per_request
                if args.threads:
                    threads = thread_cpu(server.pid)
                    print(
                        "  threads, us CPU/request: "
                        + ", ".join(
                            f"{n} {(t - threads_before.get(n, 0.0)) * per_request:.0f}"
                            for n, t in sorted(threads.items(), key=lambda kv: -kv[1])
                            if t - threads_before.get(n, 0.0) > 0
                        ),
                        flush=True,
                    )
                if marker:  # the gateway's own view: mean publish (produce -> ack) and request
                    figures.update(gateway_means(base))
                runs.append((label, marker, figures))
                means = (
                    f", mean publish {figures['publish_ms']:.1f} ms of a mean request "
                    f"{figures['request_ms']:.1f} ms (the gateway's histograms, warm-up included)"
                    if marker
                    else ""
                )
                print(
                    f"{label}: {figures['rps']:.0f} req/s, p99 {figures['p99_ms']:.1f} ms, "
                    f"{figures['cpu_us']:.0f} us CPU/request{means}; load core: broker "
                    f"{figures['broker_us']:.0f} + wrk {figures['wrk_us']:.0f} us/request, "
                    f"{figures['rps'] * (figures['broker_us'] + figures['wrk_us']) / 1e6:.2f} "
                    "busy",
                    flush=True,
                )
            finally:
                stop(server)
        in_kafka: dict[str, set[bytes]] = {}  # run marker -> distinct ids
        if any(marker for _, marker, _ in runs):
            for m in read_topic(
                broker.bootstrap, names(settings).raw("jiko"), idle_s=3, timeout_s=600
            ):
                found = re.search(rb'"bench_run":"(m\d+)"', m.value())
                if found:
                    in_kafka.setdefault(found.group(1).decode(), set()).add(m.key())
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        (
            label,
            f"{r['rps']:.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['cpu_us']:.0f}",
            int(r["non2xx"]),
            int(r["errors"]),
        )
        for label, _, r in runs
    ]
    print(
        table(
            f"Gateway ({machine()}; {args.connections} connections, {args.duration}s, "
            f"~{body_size} B signed Jiko bodies; server on core {SERVER_CORE}, wrk and "
            f"{broker.name} on core {LOAD_CORE})",
            ["target", "req/s", "p50 ms", "p99 ms", "CPU us/req", "non-2xx", "socket errors"],
            rows,
        )
    )
    by_label: dict[str, list[dict[str, float]]] = {}
    for label, _, r in runs:
        by_label.setdefault(label, []).append(r)

    def median(label: str, key: str) -> float:
        return statistics.median(r[key] for r in by_label[label])

    def busy(label: str) -> float:
        """CPU the server used per second of the run (1.0 = one core all the time): below
        its cores, the server waited, on the broker's acknowledgements or on wrk."""
        return statistics.median(r["rps"] * r["cpu_us"] / 1e6 for r in by_label[label])

    ceiling = next((lb for lb in by_label if lb.startswith("ceiling")), None)
    peer = next((lb for lb in by_label if lb.startswith("peer")), None)
    print(f"\nmedians over {args.rounds} round(s):")
    for label in by_label:
        ratios = []
        if ceiling and label != ceiling:
            ratios.append(f"/ ceiling {median(label, 'rps') / median(ceiling, 'rps'):.2f}")
        if peer and label not in (peer, ceiling):
            ratios.append(f"/ peer {median(label, 'rps') / median(peer, 'rps'):.2f} (goal >= 1.3)")
        if peer and label not in (peer, ceiling):  # the same ratio in CPU per request
            cpu_ratio = median(peer, "cpu_us") / median(label, "cpu_us")
            ratios.append(f"requests per CPU-second / peer's {cpu_ratio:.2f}")
        print(
            f"  {label}: {median(label, 'rps'):.0f} req/s, p99 {median(label, 'p99_ms'):.1f} ms, "
            f"{median(label, 'cpu_us'):.0f} us CPU/request, {busy(label):.2f} cores busy "
            + "; ".join(ratios)
        )
    lost = False
    for label, marker, r in runs:
        if not marker:
            continue
        acknowledged = r["requests"] - r["non2xx"]
        stored = len(in_kafka.get(marker, set()))
        if r["requests"] > args.bodies:  # wrk went round its bodies: ids repeat
            print(
                f"{label} ({marker}): {r['requests']:.0f} requests but {args.bodies} unique "
                "bodies, so ids repeated and the count cannot check losses: rerun with "
                "--bodies above the requests"
            )
            lost = True
            continue
        lost = lost or stored < acknowledged
        print(
            f"{label} ({marker}): acknowledged (2xx) {acknowledged:.0f}; distinct ids in Kafka "
            f"{stored} -> "
            + ("every acknowledged id is in Kafka" if stored >= acknowledged else "MISSING")
        )
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
