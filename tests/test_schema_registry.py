"""Registry mode against a real Schema Registry (Apicurio, Confluent-compatible API).

The gateway, compactor, reorderer and fan-out run as in production with
``bridge.schema_registry_url`` set, on Kafka (the session's `kafka`), against one
registry per session (tests/registry_fixture.py). What is proven:

- each topic the gateway writes gets its subject ``<topic>-value`` once;
- the schema id in every Confluent-framed record resolves with a plain HTTP GET
  ``/schemas/ids/{id}`` and decodes the record with nothing but that schema;
- during a rolling switch from single-object encoding to registry mode (two
  gateway replicas, one in each mode, readers already in registry mode) every
  stage reads both wire formats, and each event id comes out once;
- the envelope's evolution rules as the registry enforces them: a new field
  with a default passes FULL_TRANSITIVE and today's readers read it; a field
  added without a default or removed is refused;
- a registry that refuses the envelope (BACKWARD on the subject, incompatible
  change) stops `webhook-bridge gateway` at start with one line, before it listens.
"""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import fastavro
import httpx
import pytest
from fastavro.schema import to_parsing_canonical_form

from deploy import schema_registry as registry_module
from deploy.schema_registry import RegistryError, SchemaRegistry
from deploy.topics import ensure_topics
from gateway.app import create_app
from schemas.config import Settings
from schemas.envelope import Envelope, Verification
from schemas.serde import (
    SO_MAGIC,
    EnvelopeDeserializer,
    EnvelopeSerializer,
    envelope_schema_text,
)
from schemas.topics import TopicNames, TopicSpec, implied_topics
from tests.conftest import KafkaCluster
from tests.consumer_support import REPO, Record, read_topic
from tests.registry_fixture import RegistryServer, schema_registry
from tests.support import free_port, serve, settings_from_toml

__all__ = ["schema_registry"]  # the fixture, imported for pytest

HEADERS = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
BASE_US = 1_700_000_000_000_000


# ---------------------------------------------------------------- plain HTTP, no client


def ccompat(url: str, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """One call to the Confluent-compatible API with urllib: (status, decoded JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method=method, headers=HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def envelope_schema_json() -> dict[str, Any]:
    return json.loads(envelope_schema_text())  # type: ignore[no-any-return]


def with_fields(add: list[dict[str, Any]] = [], drop: str = "") -> str:  # noqa: B006
    """The envelope schema with fields added and/or one removed."""
    schema = copy.deepcopy(envelope_schema_json())
    schema["fields"] = [f for f in schema["fields"] if f["name"] != drop] + add
    return json.dumps(schema)


def canonical(schema_text: str) -> str:
    return str(to_parsing_canonical_form(fastavro.parse_schema(json.loads(schema_text))))


# ---------------------------------------------------------------- config and processes


def bridge_toml(bootstrap: str, prefix: str, registry_url: str) -> str:
    registry_line = f'schema_registry_url = "{registry_url}"' if registry_url else ""
    return f"""
[bridge]
topic_prefix = "{prefix}"
{registry_line}
[kafka]
"bootstrap.servers" = "{bootstrap}"
[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[topics]
partitions = 2
[compactor]
state_dir = "{prefix}-state"
commit_interval_ms = 100
[reorderer]
window_s = 1.0
commit_interval_ms = 100
[sources.acme]
scheme = "none"
allow_unverified = true
[sources.acme.select]
id = "id"
type = "type"
ordering_key = "subject"
[sinks.out]
type = "kafka"
topic = "{prefix}.out"
"""


class Processes:
    """`python -m deploy.cli ...` children; every one is killed at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - kept by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", *args],
            cwd=str(self.tmp_path),
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.started.append((name, proc))
        return proc

    def close(self) -> None:
        for _, proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
            for p in sorted(self.tmp_path.glob("*.log"))
        )


def post_event(url: str, event_id: str, subject: str, kind: str = "thing.happened") -> None:
    body = json.dumps({"id": event_id, "type": kind, "subject": subject}).encode()
    answer = httpx.post(
        f"{url}/webhooks/acme",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "accepted"


def headerless(producer: Any, topic: str, value: bytes, event_id: str) -> None:
    """A record from another writer: no ce_* headers, so every stage has to decode it."""
    producer.produce(topic, key=event_id.encode(), value=value)


def other_writer_envelope(event_id: str, subject: str, n: int) -> Envelope:
    return Envelope(
        event_id=event_id,
        event_id_origin="PAYLOAD",
        provider="acme",
        source="acme",
        event_type="thing.happened",
        occurred_at=BASE_US + n,
        occurred_at_origin="PAYLOAD",
        received_at=BASE_US + n,
        ordering_key=subject,
        content_type="application/json",
        body=json.dumps({"id": event_id}).encode(),
        headers={},
        verification=Verification("none"),
        request_id=f"req-{event_id}",
    )


def wait_for(
    check: Callable[[], bool], what: str, logs: Callable[[], str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{logs()}")
        time.sleep(0.5)


def framing(value: bytes | None) -> str:
    if value and value[:2] == SO_MAGIC:
        return "single-object"
    if value and value[0] == 0:
        return "registry"
    return "other"


def decode_with_registry_only(url: str, value: bytes, schemas: dict[int, str]) -> dict[str, Any]:
    """A separate reader: the id from the 5-byte prefix, the schema by plain HTTP GET."""
    magic, schema_id = struct.unpack(">bI", value[:5])
    assert magic == 0
    if schema_id not in schemas:
        status, answer = ccompat(url, "GET", f"/schemas/ids/{schema_id}")
        assert status == 200, answer
        assert answer.get("schemaType", "AVRO") == "AVRO"
        schemas[schema_id] = answer["schema"]
    writer = fastavro.parse_schema(json.loads(schemas[schema_id]))
    record = fastavro.schemaless_reader(io.BytesIO(value[5:]), writer, None)
    assert isinstance(record, dict)
    return record


# ---------------------------------------------------------------- tests


@pytest.mark.kafka
@pytest.mark.slow
def test_rolling_switch_to_registry_mode_through_every_stage(
    kafka: KafkaCluster,
    schema_registry: RegistryServer,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    url = schema_registry.url
    prefix = unique_name("sr")
    names = TopicNames(prefix)
    raw, ordered, out = names.raw("acme"), names.ordered("acme"), f"{prefix}.out"
    cfg = tmp_path / "registry.toml"
    cfg.write_text(bridge_toml(kafka.bootstrap, prefix, url), encoding="utf-8")
    registry_settings: Settings = settings_from_toml(cfg.read_text(), {})
    so_settings: Settings = settings_from_toml(bridge_toml(kafka.bootstrap, prefix, ""), {})
    ensure_topics(
        registry_settings.admin_config(),
        [*implied_topics(registry_settings), TopicSpec(out, 2, 1)],
    )
    from confluent_kafka import Producer

    other_writer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5})
    procs = Processes(tmp_path)
    expected: set[str] = set()
    try:
        # Readers first: every stage runs in registry mode before any writer switches.
        for stage in ("compactor", "reorderer"):
            procs.start(stage, stage, "--config", str(cfg), "--metrics-port", "0")
        procs.start("fanout", "fanout", "--config", str(cfg), "--metrics-port", "0")
        with ExitStack() as stack:
            old = stack.enter_context(
                serve(create_app(so_settings), so_settings)
            )  # not yet switched
            new = stack.enter_context(
                serve(create_app(registry_settings), registry_settings)
            )  # switched
            for i in range(12):  # the two replicas interleave, as behind a load balancer
                event_id = f"evt-{i}"
                post_event(old if i % 2 == 0 else new, event_id, f"key-{i % 3}")
                expected.add(event_id)
            for replica in (old, new):  # a provider's retry reaches both replicas
                post_event(replica, "evt-retried", "key-0")
            expected.add("evt-retried")
        # Other writers without ce_* headers, in both formats: decoded by every stage.
        for i, serializer in enumerate((EnvelopeSerializer(), EnvelopeSerializer(url))):
            for j in range(2):
                env = other_writer_envelope(f"other-{i}-{j}", f"key-{j}", 10 * i + j)
                headerless(other_writer, raw, serializer(env, raw), env.event_id)
                expected.add(env.event_id)
        assert other_writer.flush(30) == 0

        def sink_ids() -> set[str]:
            return {event_id_of(r, url) for r in read_topic(kafka.bootstrap, out, idle_s=0.5)}

        wait_for(lambda: sink_ids() >= expected, "every event in the sink", procs.logs, 120)
    finally:
        procs.close()

    raw_records = read_topic(kafka.bootstrap, raw, expect=len(expected) + 1, idle_s=0.5)
    formats = Counter(framing(r.value) for r in raw_records)
    # 6 + 1 via each replica (the retried event twice), 2 + 2 from the other writer
    assert formats == {"single-object": 9, "registry": 9}, formats

    ordered_records = read_topic(kafka.bootstrap, ordered, expect=len(expected), idle_s=0.5)
    ordered_ids = Counter(event_id_of(r, url) for r in ordered_records)
    assert set(ordered_ids) == expected
    assert max(ordered_ids.values()) == 1  # once, whatever format its copies had
    assert {framing(r.value) for r in ordered_records} == {"single-object", "registry"}
    sink_records = read_topic(kafka.bootstrap, out, expect=len(expected), idle_s=0.5)
    assert {event_id_of(r, url) for r in sink_records} == expected
    for topic in (names.quarantine, names.dlq("out")):
        assert read_topic(kafka.bootstrap, topic, idle_s=0.5, timeout_s=5) == [], topic

    # Subjects: <topic>-value once per topic the gateway writes; version 1 only.
    status, subjects = ccompat(url, "GET", "/subjects")
    assert status == 200
    assert sorted(s for s in subjects if s.startswith(f"{prefix}.")) == [
        f"{raw}-value",
        f"{names.quarantine}-value",
    ]
    for subject in (f"{raw}-value", f"{names.quarantine}-value"):
        assert ccompat(url, "GET", f"/subjects/{subject}/versions") == (200, [1])
    # A restarted gateway (a fresh serializer) gets the same id and adds no version.
    again = EnvelopeSerializer(url)(other_writer_envelope("x", "k", 0), raw)
    (first_id,) = struct.unpack(">I", again[1:5])
    assert ccompat(url, "GET", f"/subjects/{raw}-value/versions") == (200, [1])

    # Every registry-framed record, on every topic, resolves by plain HTTP and decodes.
    schemas: dict[int, str] = {}
    checked = 0
    for record in (*raw_records, *ordered_records, *sink_records):
        if framing(record.value) != "registry":
            continue
        assert record.value is not None
        assert struct.unpack(">I", record.value[1:5])[0] == first_id
        decoded = decode_with_registry_only(url, record.value, schemas)
        assert decoded["event_id"] == event_id_of(record, url)
        checked += 1
    assert checked >= 9 + 4
    assert [canonical(text) for text in schemas.values()] == [canonical(envelope_schema_text())]


def event_id_of(record: Record, url: str) -> str:
    """The ce_id header, or for the other writer's records the decoded envelope's id."""
    if "ce_id" in record.headers:
        return record.event_id
    return EnvelopeDeserializer(url)(record.value).event_id


@pytest.mark.kafka
def test_a_refused_envelope_stops_the_gateway_at_start_with_one_line(
    kafka: KafkaCluster,
    schema_registry: RegistryServer,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    url = schema_registry.url
    prefix = unique_name("srx")
    subject = f"{TopicNames(prefix).raw('acme')}-value"
    # In production already: an envelope from before request_id existed. Today's
    # envelope adds request_id without a default: it cannot read those records.
    older = with_fields(drop="request_id")
    assert ccompat(url, "POST", f"/subjects/{subject}/versions", {"schema": older})[0] == 200
    status, answer = ccompat(url, "PUT", f"/config/{subject}", {"compatibility": "BACKWARD"})
    assert status == 200, answer
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(bridge_toml(kafka.bootstrap, prefix, url), encoding="utf-8")
    port = free_port()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "gateway", "--config", str(cfg), "--port", str(port)],
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert time.monotonic() - started < 30
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    last = lines[0]
    assert last.startswith("error: schema registry refused the envelope schema"), last
    assert subject in last and "409" in last, last
    assert "incompatible" in last.lower(), last
    assert "gateway listening" not in done.stdout + done.stderr  # it never served
    # The registry kept what it had: no version was added.
    assert ccompat(url, "GET", f"/subjects/{subject}/versions") == (200, [1])


def test_an_unreachable_registry_stops_the_gateway_at_start_with_one_line(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "gateway.toml"
    closed = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    cfg.write_text(bridge_toml("127.0.0.1:1", "unreachable", closed), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "gateway", "--config", str(cfg), "--port", "0"],
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert done.stderr.strip().splitlines() == [
        "error: cannot register the envelope schema for subject unreachable.acme-value: "
        "ConnectError: [Errno 111] Connection refused"
    ]


def test_envelope_evolution_rules_as_the_registry_enforces_them(
    schema_registry: RegistryServer, unique_name: Callable[[str], str]
) -> None:
    url = schema_registry.url
    topic = unique_name("evolve")
    subject = f"{topic}-value"
    status, answer = ccompat(url, "PUT", f"/config/{subject}", {"compatibility": "FULL_TRANSITIVE"})
    assert status == 200, answer
    serializer = EnvelopeSerializer(url)
    env = other_writer_envelope("evt-1", "key-1", 1)
    today = serializer(env, topic)  # registers version 1

    optional = {"name": "tenant", "type": ["null", "string"], "default": None}
    status, answer = ccompat(
        url, "POST", f"/subjects/{subject}/versions", {"schema": with_fields(add=[optional])}
    )
    assert status == 200, answer  # a new field with a default: compatible both ways
    newer_id = int(answer["id"])
    refused = {
        "a new field without a default": with_fields(add=[{"name": "tenant", "type": "string"}]),
        "a field removed": with_fields(drop="request_id"),
        "a field's type changed": with_fields(
            drop="request_id", add=[{"name": "request_id", "type": "long"}]
        ),
        "a field renamed": with_fields(
            drop="request_id", add=[{"name": "request", "type": "string"}]
        ),
    }
    for change, schema in refused.items():
        status, answer = ccompat(url, "POST", f"/subjects/{subject}/versions", {"schema": schema})
        assert status == 409, (change, status, answer)
    assert ccompat(url, "GET", f"/subjects/{subject}/versions") == (200, [1, 2])

    # Today's reader reads what a newer writer wrote (the new field is skipped) ...
    newer = fastavro.parse_schema(json.loads(with_fields(add=[optional])))
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, newer_id))
    fastavro.schemaless_writer(out, newer, {**env.to_record(), "tenant": "t-1"})
    assert EnvelopeDeserializer(url)(out.getvalue()) == env
    # ... and a newer reader reads today's records (the new field takes its default).
    record = fastavro.schemaless_reader(
        io.BytesIO(today[5:]), fastavro.parse_schema(envelope_schema_json()), newer
    )
    assert isinstance(record, dict) and record["tenant"] is None


# ---------------------------------------------------------------- the component itself


def test_the_pinned_version_is_the_one_the_pom_builds() -> None:
    pom = (REPO / "deploy" / "registry" / "pom.xml").read_text(encoding="utf-8")
    pinned = pom.split("<apicurio.version>")[1].split("</apicurio.version>")[0]
    assert pinned == registry_module.APICURIO_VERSION
    assert registry_module.DEFAULT_HOME.name == f"apicurio-registry-{pinned}"


def test_a_missing_application_is_one_line_naming_the_make_target(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as caught:
        SchemaRegistry(home=tmp_path).start()
    text = str(caught.value)
    assert "\n" not in text and "make registry-jars" in text and str(tmp_path) in text


def test_a_java_older_than_21_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'openjdk version \"17.0.15\" 2025-04-15' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv(registry_module.JAVA_ENV, str(java))
    assert registry_module.java_major(str(java)) == 17
    with pytest.raises(RegistryError) as caught:
        registry_module.resolve_java()
    text = str(caught.value)
    assert "\n" not in text and "21+" in text and str(java) in text


@pytest.mark.slow
def test_a_killed_owner_leaves_no_registry_behind(
    schema_registry: RegistryServer, tmp_path: Path
) -> None:
    if schema_registry.process is None:
        pytest.skip("an existing registry (SCHEMA_REGISTRY_URL) is not started here")
    script = (
        "import time\n"
        "from deploy.schema_registry import SchemaRegistry\n"
        "r = SchemaRegistry()\n"
        "r.start()\n"
        "print(r.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert owner.stdout is not None
        java_pid = int(owner.stdout.readline())
        os.kill(java_pid, 0)  # running
        owner.kill()  # SIGKILL: the owner cleans nothing up itself
        owner.wait(10)
        deadline = time.monotonic() + 15
        while _running(java_pid):
            assert time.monotonic() < deadline, f"registry {java_pid} outlived its owner"
            time.sleep(0.1)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))
