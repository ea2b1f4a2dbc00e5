"""`webhook-bridge broker`: run a local Kafka in the foreground until Ctrl-C.

Apache Kafka (one KRaft node, or `--nodes 3` for a cluster on loopback) wherever
Java 17+ is installed, else the embedded broker (`--engine embedded` asks for it).
`--data-dir` keeps Apache Kafka's data across runs; without it the data goes with
the process.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from deploy import apache_kafka
from deploy.apache_kafka import ApacheKafka
from deploy.broker import EmbeddedBroker
from schemas.errors import BrokerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("BRIDGE_BROKER_PORT", "9092")),
        help="client port of the first node (0 = a free one; env BRIDGE_BROKER_PORT; "
        "default 9092); other ports are free ones",
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "apache", "embedded"),
        default="auto",
        help="apache (Apache Kafka from Maven jars), embedded (Tansu, memory only), or auto: "
        "apache when Java 17+ is installed",
    )
    parser.add_argument("--nodes", type=int, default=1, help="Apache Kafka nodes (1 or 3)")
    parser.add_argument("--data-dir", type=Path, help="keep Apache Kafka's data here")


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    engine = args.engine
    if engine == "auto":
        engine = "embedded" if apache_kafka.missing_prerequisite() else "apache"
    if engine == "embedded":
        if args.nodes != 1:
            raise BrokerError("the embedded broker runs one node only")
        with EmbeddedBroker(args.host, args.port) as broker:
            print(
                f"embedded broker ready: bootstrap.servers={broker.bootstrap} pid={broker.pid}",
                flush=True,
            )
            return _hold(stop, broker.alive, "embedded broker")
    cluster = ApacheKafka(nodes=args.nodes, data_dir=args.data_dir, port=args.port, host=args.host)
    cluster.start()
    try:
        print(
            f"Apache Kafka {apache_kafka.kafka_version()} ready ({args.nodes} node"
            f"{'s' if args.nodes > 1 else ''}): bootstrap.servers={cluster.bootstrap} "
            f"pids={','.join(str(p) for p in cluster.pids().values())}",
            flush=True,
        )
        return _hold(stop, cluster.alive, "Apache Kafka")
    finally:
        cluster.stop()


def _hold(stop: threading.Event, alive: object, name: str) -> int:
    assert callable(alive)
    while not stop.wait(0.5):
        if not alive():
            print(f"{name} exited", flush=True)
            return 1
    print(f"{name} stopped", flush=True)
    return 0
