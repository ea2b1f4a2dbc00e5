"""`webhook-bridge up` (what `make run` runs): a broker, the topics and every process, supervised.

1. Fill every secret the config names but the environment lacks with a random demo
   value kept in ``<state-dir>/demo-secrets.env`` (mode 0600, reused by the next run,
   read by `webhook-bridge send`), then validate the config as `check-config` does.
2. Use the Kafka at `kafka.bootstrap.servers` if it answers. If it is a loopback address
   nobody listens on, start a broker there: Apache Kafka (one KRaft node) where Java 17+
   is installed, its data kept in ``<state-dir>/kafka/<port>/`` across runs; else the
   embedded broker (Tansu, memory only), with one line saying why and what that loses.
3. Create the topics; start gateway, compactor, reorderer, fan-out and a demo receiver
   for each http sink with ``demo_receiver = true`` (never on a port another process
   holds); wait until each is healthy; print how to send a signed test webhook.
4. Supervise until Ctrl-C: a process that exits is restarted with backoff (1 s doubling
   to 30 s) and a log line, the others keep running. A broker `up` started that dies is
   restarted and the topics re-created; Apache Kafka comes back with its data, while the
   embedded broker comes back empty (the line says what was lost) and the Kafka clients
   are restarted with it. Ctrl-C stops everything, in reverse.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy import demo_secrets
from deploy.broker import EmbeddedBroker, port_in_use, wait_for_metadata
from deploy.topics import ensure_topics
from schemas import config as config_module
from schemas.config import add_config_argument
from schemas.errors import BridgeError, BrokerError
from schemas.topics import implied_topics

LOOPBACK = ("127.0.0.1", "localhost")
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 30.0  # a process that ran this long gets the initial backoff again
KAFKA_CLIENTS = ("gateway", "compactor", "reorderer", "fanout")
# Transactional clients: librdkafka can block forever in send_offsets_to_transaction
# when the coordinator restarts (its timeout is ignored: librdkafka issue 5456), so
# they start afresh once a restarted broker serves again.
TRANSACTIONAL_CLIENTS = ("compactor", "reorderer", "fanout")
TICK_S = 0.2
LIVENESS_EVERY_S = 2.0  # how often a running, healthy process's /healthz is asked
LIVENESS_FAILED_S = 10.0  # a /healthz failing this long (a stalled loop) gets a restart
TERM_GRACE_S = 5.0  # SIGTERM, then SIGKILL, for a process restarted by `up` itself


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--no-consumers", action="store_true", help="start only the broker and the gateway"
    )
    parser.add_argument(
        "--broker",
        choices=("auto", "apache", "embedded"),
        default="auto",
        help="the broker to start when the bootstrap address is a free loopback port: "
        "auto (Apache Kafka where Java 17+ is installed, else embedded), apache, embedded",
    )
    parser.add_argument(
        "--state-dir",
        default=str(demo_secrets.DEFAULT_PATH.parent),
        help="where the demo secrets and Apache Kafka's data are kept across runs "
        f"(default {demo_secrets.DEFAULT_PATH.parent})",
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


def secret_owners(raw: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(the provider secrets' variables, the sink secrets' variables) the config names."""
    providers = set(demo_secret_names({"sources": raw.get("sources", {})}))
    sinks = set(demo_secret_names({"sinks": raw.get("sinks", {})}))
    return providers, sinks


def _env_without(names: set[str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def _log(message: str) -> None:
    print(f"[up] {message}", flush=True)


def _how(code: int | None) -> str:
    if code is None:
        return "(not running)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"with code {code}"


def _healthy(url: str, timeout_s: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def _wait_http(
    url: str, timeout_s: float, process: subprocess.Popen[bytes], stopping: Callable[[], bool]
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stopping():
        if process.poll() is not None:
            return False
        if _healthy(url, 1.0):
            return True
        time.sleep(0.2)
    return False


# --------------------------------------------------------------------------- brokers


class OwnBroker(ABC):
    """A broker `up` started on the configured loopback address, and restarts if it dies."""

    name: str
    keeps_data: bool

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def returncode(self) -> int | None: ...

    @abstractmethod
    def pid(self) -> int | None: ...

    @abstractmethod
    def restart(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...


class TansuBroker(OwnBroker):
    name = "embedded broker"
    keeps_data = False

    def __init__(self, port: int) -> None:
        self._broker = EmbeddedBroker("127.0.0.1", port)

    def start(self) -> None:
        self._broker.start()

    def alive(self) -> bool:
        return self._broker.alive()

    def returncode(self) -> int | None:
        return self._broker.returncode

    def pid(self) -> int | None:
        return self._broker.pid

    def restart(self) -> None:
        self._broker.stop()
        self._broker.start()

    def stop(self) -> None:
        self._broker.stop()


class ApacheBroker(OwnBroker):
    name = "Apache Kafka"
    keeps_data = True

    def __init__(self, port: int, data_dir: Path) -> None:
        from deploy.apache_kafka import ApacheKafka

        self.data_dir = data_dir
        self._cluster = ApacheKafka(nodes=1, data_dir=data_dir, port=port)

    def start(self) -> None:
        self._cluster.start()

    def alive(self) -> bool:
        return self._cluster.alive(1)

    def returncode(self) -> int | None:
        process = self._cluster.node(1).process
        return None if process is None else process.poll()

    def pid(self) -> int | None:
        return self._cluster.pids().get(1)

    def restart(self) -> None:
        self._cluster.kill(1)  # a node that did not come back in time
        self._cluster.restart(1)

    def stop(self) -> None:
        self._cluster.stop()


def start_broker(
    settings: config_module.Settings, choice: str, state_dir: Path
) -> OwnBroker | None:
    """Start a broker on the configured address when it is a free loopback port."""
    bootstrap = settings.kafka["bootstrap.servers"].split(",")[0]
    host, _, port_text = bootstrap.rpartition(":")
    if not (host in LOOPBACK and port_text.isdigit() and not port_in_use(host, int(port_text))):
        try:  # something holds the address: it must answer as Kafka
            wait_for_metadata(settings.admin_config()["bootstrap.servers"], 10)
        except BrokerError:
            raise BrokerError(
                f"{bootstrap} is taken by something that does not answer as Kafka; free it, "
                "or run the broker elsewhere: "
                "BRIDGE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 make run"
            ) from None
        _log(f"using the Kafka at {settings.kafka['bootstrap.servers']} (not supervised by up)")
        return None
    from deploy import apache_kafka

    port = int(port_text)
    problem = None if choice == "embedded" else apache_kafka.missing_prerequisite()
    if problem is None and choice != "embedded":
        try:  # `make kafka-jars` normally fetched them; offline, Maven cannot
            apache_kafka.ensure_jars(quiet=True)
        except BrokerError as exc:
            problem = str(exc)
    if choice == "apache" and problem:
        raise BrokerError(problem)
    broker: OwnBroker
    if choice == "embedded" or problem:
        broker = TansuBroker(port)
        broker.start()
        why = problem or "chosen with --broker embedded"
        _log(
            f"embedded broker (Tansu) on 127.0.0.1:{port} (pid {broker.pid()}), memory only: "
            f"nothing it holds survives a restart of it or of up ({why})"
        )
        return broker
    data_dir = state_dir / "kafka" / str(port)
    version = apache_kafka.kafka_version()
    _log(f"starting Apache Kafka {version} on 127.0.0.1:{port}, data in {data_dir}")
    broker = ApacheBroker(port, data_dir)
    broker.start()
    _log(
        f"Apache Kafka {version} on 127.0.0.1:{port} (pid {broker.pid()}), "
        f"data kept across runs in {data_dir}"
    )
    return broker


# --------------------------------------------------------------------------- children


@dataclass
class Child:
    """One process `up` runs (`webhook-bridge <argv>`) and restarts when it exits."""

    name: str
    argv: list[str]
    health: str = ""
    port: int | None = None  # a loopback port it listens on that nobody else may hold
    env: dict[str, str] | None = None  # its environment: only the secrets it uses
    process: subprocess.Popen[bytes] | None = None
    healthy: bool = False
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = BACKOFF_INITIAL_S
    due: float = 0.0  # when a stopped child is started again (monotonic)
    next_probe: float = 0.0  # next liveness check of a healthy child (monotonic)
    failing_since: float | None = None  # when its /healthz began to fail

    def spawn(self) -> subprocess.Popen[bytes]:
        self.process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed argv
            [sys.executable, "-m", "deploy.cli", *self.argv], env=self.env
        )
        self.started_at = time.monotonic()
        self.healthy = not self.health
        self.failing_since = None
        return self.process

    def describe(self) -> str:
        pid = self.process.pid if self.process else None
        return f"{self.name} up (pid {pid})" + (f", {self.health}" if self.health else "")


def plan(
    settings: config_module.Settings,
    config_path: str,
    no_consumers: bool,
    raw: Mapping[str, Any] | None = None,
) -> list[Child]:
    """What to run. Each process gets only the secrets it uses: provider secrets go to
    the gateway alone, sink secrets to the fan-out and the demo receivers alone."""
    from consumers.sinks.http import demo_receiver_port

    providers, sinks = secret_owners(raw or {})
    gateway_env = _env_without(sinks - providers)
    sink_env = _env_without(providers - sinks)
    stage_env = _env_without(providers | sinks)
    config = ["--config", config_path]
    g = settings.gateway
    health = f"http://{g.host}:{g.port}/healthz"
    children = [Child("gateway", ["gateway", *config], health, env=gateway_env)]
    if no_consumers:
        return children
    for sink in settings.sinks.values():
        port = demo_receiver_port(sink) if sink.type == "http" else None
        if port is None:
            continue
        name = f"receiver:{sink.name}"
        if port_in_use("127.0.0.1", port):
            _log(
                f"{name}: not started: 127.0.0.1:{port} is held by another process, which "
                f"gets this sink's deliveries (demo_receiver = true in sinks.{sink.name})"
            )
            continue
        argv = ["receiver", "--port", str(port), "--secret-env", str(sink.options["secret"])]
        children.append(Child(name, argv, f"http://127.0.0.1:{port}/healthz", port, env=sink_env))
    for name, section, env in (
        ("compactor", settings.compactor, stage_env),
        ("reorderer", settings.reorderer, stage_env),
        ("fanout", settings.fanout, sink_env),
    ):
        health = f"http://{section.metrics_host}:{section.metrics_port}/healthz"
        children.append(Child(name, [name, *config], health, env=env))
    return children


class Supervisor:
    def __init__(
        self, settings: config_module.Settings, children: list[Child], broker: OwnBroker | None
    ) -> None:
        self.settings = settings
        self.children = children
        self.broker = broker
        self.stopping = False
        self.blocking = False  # in a call that cannot poll `stopping` (a broker restart)
        self._broker_backoff_s = BACKOFF_INITIAL_S
        self._broker_due = 0.0

    def stopped(self) -> bool:
        return self.stopping

    def on_signal(self, *_: object) -> None:
        self.stopping = True
        if self.blocking:
            raise KeyboardInterrupt

    def create_topics(self) -> dict[str, str]:
        return ensure_topics(self.settings.admin_config(), implied_topics(self.settings))

    def start_all(self) -> bool:
        """Start every child in order, each healthy before the next; False on Ctrl-C."""
        for child in self.children:
            if self.stopped():
                return False
            process = child.spawn()
            if child.health and not _wait_http(child.health, 60, process, self.stopped):
                if self.stopped():
                    return False
                raise BridgeError(f"{child.name} did not become healthy at {child.health}")
            child.healthy = True
            _log(child.describe())
        return not self.stopped()

    def supervise(self) -> None:
        while not self.stopping:
            self.check_broker()
            for child in self.children:
                if not self.stopping:
                    self.check(child)
            time.sleep(TICK_S)

    def check(self, child: Child) -> None:
        now = time.monotonic()
        process = child.process
        if process is not None:
            code = process.poll()
            if code is None:
                if not child.healthy:
                    if _healthy(child.health):
                        child.healthy = True
                        child.next_probe = now + LIVENESS_EVERY_S
                        _log(f"{child.describe()}, restart {child.restarts}")
                elif child.health and now >= child.next_probe:
                    self._probe(child, now)
                return
            if now - child.started_at >= STABLE_AFTER_S:
                child.backoff_s = BACKOFF_INITIAL_S
            child.process = None
            child.healthy = False
            child.due = now + child.backoff_s
            _log(
                f"{child.name} (pid {process.pid}) exited {_how(code)}; restarting it in "
                f"{child.backoff_s:.0f} s, the others keep running"
            )
            child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)
            return
        if now < child.due:
            return
        if child.port is not None and port_in_use("127.0.0.1", child.port):
            _log(
                f"{child.name}: 127.0.0.1:{child.port} is held by another process now; "
                f"not starting it there, next try in {child.backoff_s:.0f} s"
            )
            child.due = now + child.backoff_s
            child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)
            return
        child.restarts += 1
        started = child.spawn()
        _log(f"{child.name} restarted (pid {started.pid}, restart {child.restarts})")

    def _probe(self, child: Child, now: float) -> None:
        """Liveness: a process that runs but whose /healthz keeps failing is restarted."""
        child.next_probe = now + LIVENESS_EVERY_S
        if _healthy(child.health, 2.0):
            child.failing_since = None
            return
        if child.failing_since is None:
            child.failing_since = now
            return
        if now - child.failing_since >= LIVENESS_FAILED_S and child.process is not None:
            _log(
                f"{child.name} (pid {child.process.pid}): {child.health} has failed for "
                f"{now - child.failing_since:.0f} s (a stalled process); restarting it"
            )
            _terminate([child.process], TERM_GRACE_S)  # the next check restarts it

    def check_broker(self) -> None:
        broker = self.broker
        if broker is None or broker.alive() or time.monotonic() < self._broker_due:
            return
        code = broker.returncode()
        if broker.keeps_data:
            _log(
                f"{broker.name} (pid {broker.pid()}) exited {_how(code)}; restarting it on its "
                "data (nothing acknowledged is lost; the gateway answers 503 until it is back)"
            )
        else:
            _log(
                f"{broker.name} (pid {broker.pid()}) exited {_how(code)}; restarting it. "
                "It is memory only: every topic, record, consumer offset and producer id it "
                "held is lost, with the events answered 200 and not yet delivered"
            )
        if broker.keeps_data:
            held = self._hold_clients(
                TRANSACTIONAL_CLIENTS,
                "a transaction whose coordinator restarts can hang in librdkafka "
                "(librdkafka issue 5456); they resume from their committed state",
            )
        else:
            held = self._hold_clients(
                KAFKA_CLIENTS,
                "their producer ids, transactions and groups are lost with the broker",
            )
        self.blocking = True
        try:
            broker.restart()
            created = self.create_topics()
        except Exception as exc:  # a supervisor keeps going: it tries again later
            _log(
                f"{broker.name} did not come back ({exc}); next try in "
                f"{self._broker_backoff_s:.0f} s"
            )
            with contextlib.suppress(Exception):
                broker.stop()  # a half-started broker must not look alive to the next check
            self._broker_due = time.monotonic() + self._broker_backoff_s
            self._broker_backoff_s = min(self._broker_backoff_s * 2, BACKOFF_MAX_S)
            return
        finally:
            self.blocking = False
        self._broker_backoff_s = BACKOFF_INITIAL_S
        new = sum(1 for status in created.values() if status == "created")
        _log(f"{broker.name} up again (pid {broker.pid()}); topics: {new} re-created")
        for child in held:
            child.due = 0.0  # started again by the next check

    def _hold_clients(self, names: tuple[str, ...], why: str) -> list[Child]:
        """Stop these clients until the broker is back (they are then started afresh)."""
        clients = [c for c in self.children if c.name in names]
        running = [c for c in clients if c.process is not None]
        if running:
            _log(f"stopping {', '.join(c.name for c in running)} until it is back: {why}")
            _terminate([c.process for c in running if c.process], TERM_GRACE_S)
        for child in clients:
            child.process = None
            child.healthy = False
            child.due = float("inf")
        return clients

    def stop_all(self) -> None:
        live = [c for c in reversed(self.children) if c.process is not None]
        _terminate([c.process for c in live if c.process], 15)
        for child in live:
            _log(f"{child.name} stopped")
        if self.broker is not None:
            self.broker.stop()
            _log(f"{self.broker.name} stopped")


def _terminate(processes: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from deploy import topics_cmd

    state_dir = Path(args.state_dir)
    secrets_file = state_dir / demo_secrets.FILE_NAME
    raw = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
    reused, generated = demo_secrets.fill_environment(
        demo_secret_names(raw), secrets_file, os.environ
    )
    if reused or generated:
        _log(
            f"demo secrets for {', '.join(reused + generated)} in {secrets_file} (mode 0600; "
            f"{len(generated)} new, {len(reused)} kept from the last run); `send` reads them "
            "there; set a variable to choose your own"
        )
    # The checks of `webhook-bridge check-config`, before anything starts.
    settings = topics_cmd.load_checked(args.config)
    _log(
        f"config ok: {len(settings.sources)} sources, {len(settings.sinks)} sinks "
        "(the checks of check-config)"
    )
    broker = start_broker(settings, args.broker, state_dir)
    supervisor = Supervisor(settings, [], broker)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    try:
        for status, name in sorted((v, k) for k, v in supervisor.create_topics().items()):
            _log(f"topic {name}: {status}")
        supervisor.children = plan(settings, args.config, args.no_consumers, raw)
        if supervisor.start_all():
            _print_howto(settings, args.config, secrets_file)
            supervisor.supervise()
    except KeyboardInterrupt:
        pass  # Ctrl-C during a broker restart: stop as for any other Ctrl-C
    finally:
        supervisor.stop_all()
    return 0


def _print_howto(settings: config_module.Settings, config_path: str, secrets_file: Path) -> None:
    g = settings.gateway
    first = next(iter(settings.sources), "jiko")
    bin_dir = Path(sys.executable).parent
    extra = "" if secrets_file == demo_secrets.DEFAULT_PATH else f" --secrets-file {secrets_file}"
    print(
        f"""
[up] webhook-bridge is running. In another terminal:

    {bin_dir}/webhook-bridge send {first} --config {config_path}{extra}
    curl -s http://{g.host}:{g.port}/metrics | grep webhook_bridge_gateway_requests_total

  (`send` takes each *_WEBHOOK_SECRET you have not set from {secrets_file}.)
  A process that dies is restarted; Ctrl-C stops everything.
""",
        flush=True,
    )
