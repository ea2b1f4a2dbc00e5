"""Shared pieces of the benchmarks: pinned processes, readiness waits, tables."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pinned(
    core: int | str,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    quiet: bool = True,
    cwd: str = REPO,
) -> subprocess.Popen[bytes]:
    """Start a process pinned to a CPU core (taskset; "0,1" for a set), with the repo on
    PYTHONPATH (unless `env` says otherwise)."""
    full_env = {**os.environ, "PYTHONPATH": REPO, **(env or {})}
    out = subprocess.DEVNULL if quiet and not os.environ.get("BENCH_SERVER_LOGS") else None
    return subprocess.Popen(
        ["taskset", "-c", str(core), *argv], env=full_env, stdout=out, stderr=out, cwd=cwd
    )


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = [
        f"\n## {title}\n",
        "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        )
    return "\n".join(lines)


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"


class BenchBroker:
    """The broker a benchmark runs on: Apache Kafka (one KRaft node from the Maven jars,
    the default wherever Java 17+ runs) or the embedded broker (`--broker embedded`)."""

    def __init__(self, kind: str = "auto", config: dict[str, str] | None = None) -> None:
        from deploy import apache_kafka
        from deploy.apache_kafka import ApacheKafka
        from deploy.broker import EmbeddedBroker

        if kind == "auto":
            kind = "embedded" if apache_kafka.missing_prerequisite() else "apache"
        self.kind = kind
        self._apache = (
            ApacheKafka(nodes=1, heap="1g", config=dict(config or {})) if kind == "apache" else None
        )
        self._embedded = EmbeddedBroker() if kind == "embedded" else None

    @property
    def name(self) -> str:
        if self._apache is not None:
            from deploy.apache_kafka import kafka_version

            return f"Apache Kafka {kafka_version()}"
        return "embedded (Tansu)"

    def start(self) -> str:
        if self._apache is not None:
            return self._apache.start()
        assert self._embedded is not None
        return self._embedded.start()

    @property
    def bootstrap(self) -> str:
        if self._apache is not None:
            return self._apache.bootstrap
        assert self._embedded is not None
        return self._embedded.bootstrap

    def pids(self) -> list[int]:
        """The broker's processes (one per Apache Kafka node, or the embedded broker)."""
        if self._apache is not None:
            return list(self._apache.pids().values())
        if self._embedded is not None and self._embedded.pid:
            return [self._embedded.pid]
        return []

    def pin(self, cores: set[int]) -> None:
        """Every thread of the broker process onto `cores` (threads it starts later inherit)."""
        for pid in self.pids():
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):  # a thread that ended meanwhile
                    os.sched_setaffinity(int(task), cores)

    def stop(self) -> None:
        if self._apache is not None:
            self._apache.stop()
        elif self._embedded is not None:
            self._embedded.stop()

    def __enter__(self) -> BenchBroker:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def add_broker_argument(parser: object) -> None:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    parser.add_argument(
        "--broker",
        choices=("auto", "apache", "embedded"),
        default="auto",
        help="the broker to measure on: apache (Apache Kafka from the Maven jars; auto when "
        "Java 17+ is installed) or embedded (Tansu)",
    )
    parser.add_argument(
        "--broker-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an Apache Kafka broker setting for this run (repeatable)",
    )


def broker_config(args: object) -> dict[str, str]:
    """`--broker-config KEY=VALUE` options as a dict."""
    pairs = getattr(args, "broker_config", None) or []
    return dict(pair.split("=", 1) for pair in pairs)


def thread_seconds(pid: int | str = "self", split: bool = False) -> dict[tuple[str, str], float]:
    """CPU seconds (user + system) of each thread of a process, from /proc, by (thread
    name, thread id). A thread that ends while this reads is left out. `split`: user and
    system time apart, the system part under the thread's name + " (sys)"."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[str, str], float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as stat:
                head, rest = stat.read().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        name = head.split("(", 1)[1]
        if split:
            out[name, tid] = int(fields[11]) / tick
            out[name + " (sys)", tid] = int(fields[12]) / tick
        else:
            out[name, tid] = (int(fields[11]) + int(fields[12])) / tick
    return out
