"""`webhook-bridge broker`: run the embedded broker in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from gateway.broker import EmbeddedBroker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("BRIDGE_BROKER_PORT", "9092")),
        help="port (0 = a free one; env BRIDGE_BROKER_PORT; default 9092)",
    )


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker(args.host, args.port) as broker:
        print(
            f"embedded broker ready: bootstrap.servers={broker.bootstrap} pid={broker.pid}",
            flush=True,
        )
        while not stop.wait(0.5):
            if not broker.alive():
                print("embedded broker exited", flush=True)
                return 1
    print("embedded broker stopped", flush=True)
    return 0
