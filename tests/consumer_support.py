"""Helpers for the compactor / reorderer tests: config files, input, stage processes, reading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.topics import ensure_topics
from schemas import config as config_module
from schemas.config import Settings
from schemas.envelope import Envelope, Verification
from schemas.records import ce_headers
from schemas.serde import EnvelopeSerializer
from schemas.topics import implied_topics

REPO = Path(__file__).resolve().parent.parent
BASE_US = 1_700_000_000_000_000


def write_config(
    tmp_path: Path,
    bootstrap: str,
    prefix: str,
    *,
    providers: Sequence[str] = ("acme",),
    window_s: float = 1.0,
    horizon_s: float = 3600.0,
    state_dir: str | None = None,
    partitions: int = 3,
    commit_interval_ms: int = 100,
    max_batch: int = 5000,
    extra: str = "",
    topic_config: dict[str, str] | None = None,
) -> Path:
    """A config whose sources (named like their providers) accept unverified input."""
    state = str(tmp_path / "state") if state_dir is None else state_dir
    lines = [
        "[bridge]",
        f'topic_prefix = "{prefix}"',
        'log_level = "info"',
        "",
        "[kafka]",
        f'"bootstrap.servers" = "{bootstrap}"',
        "",
        "[topics]",
        f"partitions = {partitions}",
        "config = { " + ", ".join(f'"{k}" = "{v}"' for k, v in (topic_config or {}).items()) + " }",
        "",
        "[compactor]",
        f"dedup_horizon_s = {horizon_s}",
        f'state_dir = "{state}"',
        f"commit_interval_ms = {commit_interval_ms}",
        f"max_batch = {max_batch}",
        "",
        "[reorderer]",
        f"window_s = {window_s}",
        f"commit_interval_ms = {commit_interval_ms}",
        f"max_batch = {max_batch}",
        "",
    ]
    for provider in providers:
        lines += [f"[sources.{provider}]", 'scheme = "none"', "allow_unverified = true", ""]
    path = tmp_path / f"{prefix}.toml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def load_settings(path: Path) -> Settings:
    return config_module.load(path, env={})


def create_topics(settings: Settings) -> None:
    ensure_topics(settings.admin_config(), implied_topics(settings))


def envelope(
    event_id: str, subject: str, occurred_us: int, source: str = "acme", body: bytes = b"{}"
) -> Envelope:
    return Envelope(
        event_id=event_id,
        event_id_origin="PAYLOAD",
        provider=source,
        source=source,
        event_type="thing.happened",
        occurred_at=occurred_us,
        occurred_at_origin="PAYLOAD",
        received_at=occurred_us,
        ordering_key=subject,
        content_type="application/json",
        body=body,
        headers={},
        verification=Verification("none"),
        request_id="req-" + event_id,
    )


class RawProducer:
    """Writes envelopes the way the gateway does: key = event id, value Avro, ce_* headers."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
            }
        )
        self._serializer = EnvelopeSerializer()

    def send(self, topic: str, env: Envelope) -> None:
        self.send_raw(topic, env.event_id.encode(), self._serializer(env, topic), ce_headers(env))

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, key=key, value=value, headers=list(headers) if headers else None
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def flush(self) -> None:
        assert self._producer.flush(30) == 0


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int = 0

    @property
    def event_id(self) -> str:
        return self.headers["ce_id"].decode()

    @property
    def occurred(self) -> bytes:
        return self.headers["ce_time"]

    @property
    def late(self) -> bool:
        return self.headers.get("late") == b"1"


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    idle_s: float = 3.0,
    timeout_s: float = 120.0,
    committed_only: bool = True,
) -> list[Record]:
    """Every record of a topic: until `expect` records arrived and then `idle_s` of silence."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader",
            "enable.auto.commit": "false",
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline:
            msgs: list[Any] = consumer.consume(10_000, 0.2)
            for m in msgs:
                if m.error() is None:
                    out.append(
                        Record(
                            m.topic(),
                            m.partition(),
                            m.offset(),
                            m.key(),
                            m.value(),
                            {k: v for k, v in (m.headers() or []) if v is not None},
                            m.timestamp()[1],
                        )
                    )
            if msgs:
                last = time.monotonic()
            elif (expect is None or len(out) >= expect) and time.monotonic() - last > idle_s:
                break
        return out
    finally:
        consumer.close()


@dataclass
class StageProcess:
    """`python -m deploy.cli <stage> --config ...` as a child; always stopped by the test."""

    stage: str
    config: Path
    instance_id: str = "0"
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> StageProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.extra_env}
        log = open(self.log_path or os.devnull, "ab")  # noqa: SIM115 - kept by the child
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deploy.cli",
                self.stage,
                "--config",
                str(self.config),
                "--instance-id",
                self.instance_id,
                "--metrics-port",
                "0",
            ],
            cwd=str(REPO),
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> str:
        """Scrape the stage's /metrics (its port is in the "ops endpoint listening" line)."""
        assert self.log_path is not None
        text = self.log_path.read_text(errors="replace")
        port = int(text.split("ops endpoint listening")[1].split("port=")[1].split()[0])
        url = f"http://127.0.0.1:{port}/metrics"
        return urllib.request.urlopen(url, timeout=5).read().decode()  # type: ignore[no-any-return]

    def log_text(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until the stage's /readyz says it holds partitions (its first join is done)."""
        assert self.log_path is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.alive(), self.log_path.read_text(errors="replace")[-3000:]
            text = self.log_path.read_text(errors="replace")
            if "ops endpoint listening" in text:
                port = int(text.split("ops endpoint listening")[1].split("port=")[1].split()[0])
                try:
                    url = f"http://127.0.0.1:{port}/readyz"
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"{self.stage} {self.instance_id} not ready in {timeout_s}s")

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout_s: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise
        return int(self.process.returncode)


class Stages:
    """Owns every stage process a test starts; `close` kills what is left."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[StageProcess] = []

    def start(self, stage: str, config: Path, instance_id: str = "0") -> StageProcess:
        log = self.tmp_path / f"{stage}-{instance_id}-{len(self.started)}.log"
        proc = StageProcess(stage, config, instance_id, log).start()
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.started:
            proc.kill()

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(self.tmp_path.glob("*.log"))
        )


def group_assignment(
    bootstrap: str, group: str, *, timeout_s: float = 60.0, members: int | None = None
) -> dict[str, str]:
    """{"topic[partition]": owner's client.id} once the group is stable (and has `members`)."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    seen: Any = None
    while time.monotonic() < deadline:
        seen = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
        owners = {
            f"{tp.topic}[{tp.partition}]": member.client_id
            for member in seen.members
            for tp in member.assignment.topic_partitions
        }
        if (
            seen.state == ConsumerGroupState.STABLE
            and owners
            and (members is None or len(seen.members) == members)
        ):
            return owners
        time.sleep(0.2)
    raise AssertionError(f"group {group} not stable within {timeout_s}s: {seen}")


def by_key(records: Iterable[Record]) -> dict[bytes | None, list[Record]]:
    out: dict[bytes | None, list[Record]] = {}
    for r in records:
        out.setdefault(r.key, []).append(r)
    return out


def assert_sorted_except_late(records: Sequence[Record]) -> None:
    """Within each key, non-late records are in non-decreasing ce_time order."""
    for key, items in by_key(records).items():
        times = [r.occurred for r in items if not r.late]
        assert times == sorted(times), f"key {key!r} out of order: {times}"
