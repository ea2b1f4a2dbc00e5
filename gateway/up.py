"""`webhook-bridge up` (what `make run` runs): broker, topics, every process, one Ctrl-C.

1. Fill every secret the config names but the environment lacks with a random
   demo value, and print it (demo only: production sets them all).
2. Use the Kafka at `kafka.bootstrap.servers` if it answers; if it is a loopback
   address nobody listens on, start the embedded broker there.
3. Create the topics, start gateway, compactor, reorderer, fan-out and, for HTTP
   sinks pointing at a loopback port, the demo receiver; wait until each is healthy.
4. Print how to send a signed test webhook; on Ctrl-C stop everything, in reverse.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway import config as config_module
from gateway.broker import EmbeddedBroker, port_in_use, wait_for_metadata
from gateway.cli import add_config_argument
from gateway.errors import BridgeError, BrokerError
from gateway.topics import ensure_topics, implied_topics

LOOPBACK = ("127.0.0.1", "localhost")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--no-consumers", action="store_true", help="start only the broker and the gateway"
    )


def demo_secret_names(raw: Mapping[str, Any]) -> dict[str, str]:
    """Every environment variable the config names as secret material -> its format."""
    wanted: dict[str, str] = {}
    for source in raw.get("sources", {}).values():
        fmt = "whsec" if source.get("scheme") == "standard-webhooks" else "token"
        for name in source.get("secrets", []):
            wanted[name] = fmt
        for name in source.get("verify", {}).get("static_headers", {}).values():
            wanted[name] = "token"
    for sink in raw.get("sinks", {}).values():
        if isinstance(sink.get("secret"), str):
            wanted[sink["secret"]] = "whsec"
    return wanted


def make_demo_secret(fmt: str) -> str:
    if fmt == "whsec":
        return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return "demo_" + secrets.token_urlsafe(24)


def _log(message: str) -> None:
    print(f"[up] {message}", flush=True)


def _wait_http(
    url: str, timeout_s: float, process: subprocess.Popen[bytes], stopping: Callable[[], bool]
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stopping():
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def run(args: argparse.Namespace) -> int:
    raw = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
    filled: dict[str, str] = {}
    for name, fmt in demo_secret_names(raw).items():
        if not os.environ.get(name):
            os.environ[name] = filled[name] = make_demo_secret(fmt)
    settings = config_module.load(args.config)
    if filled:
        _log("demo secrets (random for this run; set these variables to choose your own):")
        for name, value in filled.items():
            print(f"    export {name}='{value}'", flush=True)

    broker: EmbeddedBroker | None = None
    bootstrap = settings.kafka["bootstrap.servers"].split(",")[0]
    host, _, port_text = bootstrap.rpartition(":")
    if host in LOOPBACK and port_text.isdigit() and not port_in_use(host, int(port_text)):
        broker = EmbeddedBroker("127.0.0.1", int(port_text))
        broker.start()
        _log(f"embedded broker (Tansu) on {broker.bootstrap}, memory only")
    else:
        try:  # something holds the address: it must answer as Kafka
            wait_for_metadata(settings.admin_config()["bootstrap.servers"], 10)
        except BrokerError:
            raise BrokerError(
                f"{bootstrap} is taken by something that does not answer as Kafka; free it, "
                "or run the embedded broker elsewhere: "
                "BRIDGE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 make run"
            ) from None
        _log(f"using the Kafka at {settings.kafka['bootstrap.servers']}")

    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop_all(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        for status, name in sorted(
            (v, k)
            for k, v in ensure_topics(settings.admin_config(), implied_topics(settings)).items()
        ):
            _log(f"topic {name}: {status}")
        plan = _plan(settings, args)
        for name, argv, health in plan:
            process = subprocess.Popen([sys.executable, "-m", "gateway.cli", *argv])  # noqa: S603
            children.append((name, process))
            if health and not _wait_http(health, 60, process, lambda: stopping):
                if stopping:
                    break  # Ctrl-C while waiting: stop what has started
                raise BridgeError(f"{name} did not become healthy at {health}")
            _log(f"{name} up (pid {process.pid})" + (f", {health}" if health else ""))
        if not stopping:
            _print_howto(settings, args.config)
        while not stopping:
            for name, process in children:
                if process.poll() is not None:
                    _log(f"{name} exited with code {process.returncode}; stopping everything")
                    stopping = True
            time.sleep(0.3)
    finally:
        for _, process in reversed(children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in reversed(children):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
            _log(f"{name} stopped")
        if broker is not None:
            broker.stop()
            _log("embedded broker stopped")
    return 0


def _plan(
    settings: config_module.Settings, args: argparse.Namespace
) -> list[tuple[str, list[str], str]]:
    config = ["--config", args.config]
    g = settings.gateway
    plan = [("gateway", ["gateway", *config], f"http://{g.host}:{g.port}/healthz")]
    if args.no_consumers:
        return plan
    for sink in settings.sinks.values():
        url = urlsplit(str(sink.options.get("url", "")))
        if sink.type == "http" and url.hostname in LOOPBACK and url.port:
            plan.append(
                (
                    f"receiver:{sink.name}",
                    [
                        "receiver",
                        "--port",
                        str(url.port),
                        "--secret-env",
                        str(sink.options.get("secret", "")),
                    ],
                    f"http://127.0.0.1:{url.port}/healthz",
                )
            )
    for name, module, section in (
        ("compactor", "consumers.compactor", settings.compactor),
        ("reorderer", "consumers.reorderer", settings.reorderer),
        ("fanout", "consumers.fanout.process", settings.fanout),
    ):
        if importlib.util.find_spec(module) is None:
            _log(f"{name}: not part of this build yet, skipped")
            continue
        health = f"http://{section.metrics_host}:{section.metrics_port}/healthz"
        plan.append((name, [name, *config], health))
    return plan


def _print_howto(settings: config_module.Settings, config_path: str) -> None:
    g = settings.gateway
    first = next(iter(settings.sources), "jiko")
    bin_dir = Path(sys.executable).parent
    print(
        f"""
[up] webhook-bridge is running. In another terminal:

    {bin_dir}/webhook-bridge send {first} --config {config_path}
    curl -s http://{g.host}:{g.port}/metrics | grep webhook_bridge_gateway_requests_total

  (`send` reads the same *_WEBHOOK_SECRET variables: export the demo values above
   in that terminal first.) Ctrl-C stops everything.
""",
        flush=True,
    )
