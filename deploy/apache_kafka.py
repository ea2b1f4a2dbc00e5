"""Apache Kafka (KRaft) from Maven Central's jars: one node or a cluster on loopback.

The broker of the test suite, CI and `make run` wherever Java 17+ is installed
(the embedded Tansu broker in `deploy.broker` is the fallback elsewhere).

- **Jars.** `deploy/kafka/pom.xml` pins the Kafka version (the only place it is
  written). `make kafka-jars`, or `ensure_jars()`, runs Maven once to copy
  ``org.apache.kafka:kafka_2.13`` and its dependencies, with a log4j2 binding,
  into ``.cache/kafka/<version>/``; after that nothing is fetched.
- **Nodes.** Every node is broker and controller (combined mode) with static
  voters, so one node and three nodes start the same way: format each log
  directory with `kafka.tools.StorageTool` (same cluster id), then run
  `kafka.Kafka server.properties`. Ports are free loopback ports chosen at the
  first start and kept in ``cluster.json`` beside the data, so a cluster with a
  data directory (``make run``'s) comes back with its topics, records, offsets
  and transactions after a restart.
- **Settings.** Internal topics (offsets, transaction state, share state) use
  replication min(3, nodes) and min ISR 1 on one node, 2 on three; user topics
  are never auto-created; the initial rebalance delay is 0.
- **Stop.** SIGTERM (a controlled shutdown), then SIGKILL after a timeout. Each
  JVM gets PR_SET_PDEATHSIG, so a killed test run or `up` leaves no broker behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from xml.etree import ElementTree

from deploy.broker import free_port, port_in_use, wait_for_metadata
from schemas.errors import BrokerError
from schemas.process import die_with_parent

__all__ = ["ApacheKafka", "BrokerError", "available", "ensure_jars", "kafka_version"]

REPO = Path(__file__).resolve().parent.parent
POM = REPO / "deploy" / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO / "deploy" / "kafka" / "log4j2.properties"
LIBS_ENV = "WB_KAFKA_LIBS"  # a folder of jars to use instead of the Maven cache
CACHE_ENV = "WB_CACHE_DIR"  # where fetched jars go (default: <repo>/.cache)
MIN_JAVA = 17
_COMPLETE = ".complete"


def kafka_version(pom: Path = POM) -> str:
    """The pinned Kafka version: the `kafka.version` property of deploy/kafka/pom.xml."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    # our own pom.xml from the repository, not untrusted input
    root = ElementTree.parse(pom).getroot()  # noqa: S314
    node = root.find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} has no <kafka.version> property")
    return (node.text or "").strip()


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or REPO / ".cache")


def libs_dir(version: str | None = None) -> Path:
    override = os.environ.get(LIBS_ENV)
    if override:
        return Path(override)
    return cache_dir() / "kafka" / (version or kafka_version())


def java_major(java: str = "java") -> int | None:
    """The major version of `java`, or None when it is not installed."""
    path = shutil.which(java)
    if path is None:
        return None
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def missing_prerequisite() -> str | None:
    """One line naming what is missing to run Apache Kafka here, or None."""
    major = java_major()
    if major is None:
        return f"Apache Kafka needs Java {MIN_JAVA}+ and no `java` was found on PATH"
    if major < MIN_JAVA:
        return f"Apache Kafka needs Java {MIN_JAVA}+; `java` is version {major}"
    if not jars_present() and shutil.which("mvn") is None:
        return (
            "Apache Kafka's jars are not fetched yet and Maven (`mvn`) is not installed "
            f"to fetch them (or point {LIBS_ENV} at a folder of Kafka's jars)"
        )
    return None


def jars_present(libs: Path | None = None) -> bool:
    libs = libs or libs_dir()
    if os.environ.get(LIBS_ENV):
        return any(libs.glob("kafka_2.13-*.jar"))
    return (libs / _COMPLETE).is_file()


def ensure_jars(quiet: bool = False) -> Path:
    """Fetch the pinned Kafka's jars with Maven once; return the folder that holds them."""
    libs = libs_dir()
    if jars_present(libs):
        return libs
    problem = missing_prerequisite()
    if problem:
        raise BrokerError(problem)
    tmp = libs.with_name(libs.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn",
        "-B",
        "-q" if quiet else "--no-transfer-progress",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    if not quiet:
        print(f"kafka-jars: fetching Apache Kafka {kafka_version()} with Maven", flush=True)
    result = subprocess.run(cmd, capture_output=quiet, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        detail = (result.stdout or "").strip().splitlines()[-1:] if quiet else []
        raise BrokerError(
            f"Maven could not fetch Apache Kafka {kafka_version()} "
            f"(exit {result.returncode}){': ' + detail[0] if detail else ''}"
        )
    (tmp / _COMPLETE).write_text(kafka_version() + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


def available() -> tuple[bool, str]:
    """(True, "") when Apache Kafka can run here, else (False, why) in one line."""
    problem = missing_prerequisite()
    return (problem is None, problem or "")


# --------------------------------------------------------------------------- nodes


@dataclass
class NodeSpec:
    node_id: int
    port: int
    controller_port: int


@dataclass
class KafkaNode:
    spec: NodeSpec
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ApacheKafka:
    """Start/stop Apache Kafka on loopback: `nodes` combined broker+controller nodes.

    `data_dir=None` keeps the data in a temporary folder removed by `stop()`; a
    given folder is kept, and a later start on it resumes the same cluster.
    `port` fixes the first node's client port (0: a free one); `config` adds or
    overrides server properties on every node.
    """

    nodes: int = 1
    data_dir: Path | None = None
    port: int = 0
    host: str = "127.0.0.1"
    config: Mapping[str, str] = field(default_factory=dict)
    heap: str = "512m"
    log_level: str = "WARN"
    _nodes: dict[int, KafkaNode] = field(default_factory=dict, init=False, repr=False)
    _tmp: Path | None = field(default=None, init=False, repr=False)
    _cluster_id: str = field(default="", init=False, repr=False)

    # ------------------------------------------------------------------ public

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{n.spec.port}" for n in self._nodes.values())

    @property
    def node_ids(self) -> list[int]:
        return sorted(self._nodes)

    def node(self, node_id: int) -> KafkaNode:
        return self._nodes[node_id]

    def address(self, node_id: int) -> str:
        return f"{self.host}:{self._nodes[node_id].spec.port}"

    def start(self, timeout_s: float = 90.0) -> str:
        """Format (first time only) and start every node; wait until all of them serve."""
        libs = ensure_jars(quiet=True)
        root = self._root()
        specs = self._load_or_choose_ports(root)
        self._nodes = {s.node_id: KafkaNode(s, root / f"node-{s.node_id}") for s in specs}
        for node in self._nodes.values():
            if node.process is None and port_in_use(self.host, node.spec.port):
                raise BrokerError(
                    f"port {node.spec.port} on {self.host} is already in use; stop what "
                    "listens there or choose another port"
                )
        self._format(libs, [n for n in self._nodes.values() if not _formatted(n.data_dir)])
        try:
            for node in self._nodes.values():
                self._launch(libs, node)
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def wait_ready(self, timeout_s: float = 90.0, node_ids: list[int] | None = None) -> None:
        """Block until every live node (or `node_ids`) is in the cluster's metadata."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        wanted = set(node_ids if node_ids is not None else self._live_ids())
        deadline = time.monotonic() + timeout_s
        for node_id in wanted:
            node = self._nodes[node_id]
            try:
                wait_for_metadata(self.address(node_id), timeout_s, node.process, "Apache Kafka")
            except BrokerError as exc:
                raise BrokerError(f"{exc}; see {node.log_file}") from None
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        while True:
            try:
                brokers = set(admin.list_topics(timeout=2).brokers)
                if wanted <= brokers:
                    return
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"Apache Kafka nodes {sorted(wanted)} did not all register within "
                    f"{timeout_s}s; see {self._root()}"
                )
            time.sleep(0.1)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every node, SIGKILL what is left after `timeout_s`; drop a temporary dir."""
        live = [n for n in self._nodes.values() if n.alive()]
        for node in live:
            assert node.process is not None
            node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in live:
            assert node.process is not None
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(10)
        for node in self._nodes.values():
            node.process = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def kill(self, node_id: int) -> None:
        """kill -9 one node (its data stays; `restart` brings it back)."""
        node = self._nodes[node_id]
        if node.alive():
            assert node.process is not None
            node.process.kill()
            node.process.wait(10)
        node.process = None

    def terminate(self, node_id: int, timeout_s: float = 20.0) -> None:
        node = self._nodes[node_id]
        if node.alive():
            assert node.process is not None
            node.process.send_signal(signal.SIGTERM)
            try:
                node.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(10)
        node.process = None

    def restart(self, node_id: int, timeout_s: float = 90.0) -> None:
        """Start a stopped or killed node again on its ports and data."""
        node = self._nodes[node_id]
        if node.alive():
            return
        self._launch(libs_dir(), node)
        self.wait_ready(timeout_s, [node_id])

    def alive(self, node_id: int | None = None) -> bool:
        if node_id is not None:
            return self._nodes[node_id].alive()
        return bool(self._nodes) and all(n.alive() for n in self._nodes.values())

    def pids(self) -> dict[int, int]:
        return {i: n.process.pid for i, n in self._nodes.items() if n.process is not None}

    def leader(self, topic: str, partition: int = 0, timeout_s: float = 10.0) -> int:
        """The node that leads `topic`'s `partition` now."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        meta = admin.list_topics(topic, timeout=timeout_s).topics[topic]
        return int(meta.partitions[partition].leader)

    def __enter__(self) -> ApacheKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _live_ids(self) -> list[int]:
        return [i for i, n in self._nodes.items() if n.alive()]

    def _root(self) -> Path:
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            return self.data_dir
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="kafka-"))
        return self._tmp

    def _load_or_choose_ports(self, root: Path) -> list[NodeSpec]:
        """The cluster's ports and id: from cluster.json when the data was made before."""
        state = root / "cluster.json"
        if state.is_file():
            saved = json.loads(state.read_text())
            specs = [NodeSpec(**n) for n in saved["nodes"]]
            if len(specs) != self.nodes:
                raise BrokerError(
                    f"{root} holds a {len(specs)}-node cluster, not {self.nodes}; "
                    "remove it to start afresh"
                )
            if self.port and specs[0].port != self.port:
                raise BrokerError(
                    f"{root} holds a cluster on port {specs[0].port}, not {self.port}; "
                    "remove it to start afresh"
                )
            self._cluster_id = saved["cluster_id"]
            return specs
        taken: set[int] = set()

        def pick(wanted: int = 0) -> int:
            port = wanted or free_port(self.host)
            while port in taken:
                port = free_port(self.host)
            taken.add(port)
            return port

        specs = [
            NodeSpec(i, pick(self.port if i == 1 else 0), pick()) for i in range(1, self.nodes + 1)
        ]
        self._cluster_id = _cluster_id()
        state.write_text(
            json.dumps(
                {"cluster_id": self._cluster_id, "nodes": [s.__dict__ for s in specs]}, indent=2
            )
        )
        return specs

    def _properties(self, node: KafkaNode) -> dict[str, str]:
        s = node.spec
        n = len(self._nodes)
        replicas = str(min(3, n))
        min_isr = "1" if n == 1 else "2"
        voters = ",".join(
            f"{o.spec.node_id}@{self.host}:{o.spec.controller_port}" for o in self._nodes.values()
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": str(s.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{self.host}:{s.port},CONTROLLER://{self.host}:{s.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{s.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data_dir / "log"),
            "auto.create.topics.enable": "false",
            "num.partitions": "3",
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
        }
        props.update(self.config)
        return props

    def _format(self, libs: Path, nodes: list[KafkaNode]) -> None:
        """Format the log directories (in parallel: each is a JVM start)."""
        running: list[tuple[KafkaNode, subprocess.Popen[str]]] = []
        for node in nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            conf = self._write_properties(node)
            cmd = [
                *_java(libs, "256m"),
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                self._cluster_id,
                "--config",
                str(conf),
                "--ignore-formatted",
            ]
            running.append(
                (
                    node,
                    subprocess.Popen(  # noqa: S603 - fixed argv
                        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                    ),
                )
            )
        for node, proc in running:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise BrokerError(
                    f"formatting Kafka node {node.spec.node_id} failed: "
                    f"{(out or '').strip().splitlines()[-1:] or proc.returncode}"
                )

    def _write_properties(self, node: KafkaNode) -> Path:
        conf = node.data_dir / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in self._properties(node).items()))
        return conf

    def _launch(self, libs: Path, node: KafkaNode) -> None:
        conf = self._write_properties(node)
        cmd = [
            *_java(libs, self.heap),
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.log.file={node.log_file}",
            f"-Dkafka.log.level={self.log_level}",
            "kafka.Kafka",
            str(conf),
        ]
        with open(node.data_dir / "stdout.log", "ab") as out:
            node.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
                start_new_session=True,
            )


def _java(libs: Path, heap: str) -> list[str]:
    return [
        shutil.which("java") or "java",
        f"-Xmx{heap}",
        "-Xss1m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        "-cp",
        str(libs / "*"),
    ]


def _formatted(node_dir: Path) -> bool:
    return (node_dir / "log" / "meta.properties").is_file()


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never
    starting with '-' (kafka-storage would read it as an option: 1 start in 64 failed;
    Kafka's own Uuid.randomUuid() skips those too)."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@contextlib.contextmanager
def running(nodes: int = 1, **kwargs: object) -> Iterator[ApacheKafka]:
    cluster = ApacheKafka(nodes=nodes, **kwargs)  # type: ignore[arg-type]
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m deploy.apache_kafka fetch`: what `make kafka-jars` runs."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["fetch"]:
        print("usage: python -m deploy.apache_kafka fetch [--optional]", file=sys.stderr)
        return 2
    try:
        libs = ensure_jars()
    except BrokerError as exc:
        print(f"kafka-jars: {exc}", file=sys.stderr)
        return 0 if "--optional" in args else 1
    print(f"kafka-jars: Apache Kafka {kafka_version()} in {libs}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
