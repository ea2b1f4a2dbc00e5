"""A Confluent-compatible Schema Registry on a loopback port: Apicurio Registry.

Registry mode (``bridge.schema_registry_url``) is proven against it in
tests/test_schema_registry.py, and `python -m deploy.schema_registry` runs one
for local work (docs/schema-registry.md). Production points at its own registry.

`make registry-jars` (deploy/registry/pom.xml) fetches Apicurio's built
application from Maven Central into .cache/registry/; `SchemaRegistry(build=True)`
runs that make target when the application is missing. Apicurio 3.3 runs on
Java 21 or newer: `resolve_java` finds one. Storage is in memory (H2): a restart
forgets every schema, like the embedded broker forgets its topics.

The URL to configure is ``http://HOST:PORT/apis/ccompat/v7``, the Confluent
Schema Registry API (subjects, versions, schema ids, compatibility config).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from deploy.broker import free_port, port_in_use
from schemas.errors import BridgeError
from schemas.process import die_with_parent

APICURIO_VERSION = "3.3.3"  # keep equal to <apicurio.version> in deploy/registry/pom.xml
MIN_JAVA = 21  # Apicurio 3.3 is compiled for Java 21
CCOMPAT_PATH = "/apis/ccompat/v7"
HOME_ENV = "BRIDGE_SCHEMA_REGISTRY_HOME"  # a folder holding quarkus-run.jar
JAVA_ENV = "BRIDGE_SCHEMA_REGISTRY_JAVA"  # a java executable, 21 or newer
REPO = Path(__file__).resolve().parent.parent
DEFAULT_HOME = REPO / ".cache" / "registry" / f"apicurio-registry-{APICURIO_VERSION}"
RUN_JAR = "quarkus-run.jar"

# A 2-core machine shared with Kafka and the test processes: one GC thread, C1
# only (faster start, less compiler memory), thread pools sized for one CPU.
# Measured: ready in about 5 s, about 250 MB resident.
JVM_FLAGS = (
    "-Xms32m",
    "-Xmx256m",
    "-Xss512k",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:ActiveProcessorCount=1",
    "-XX:+ExitOnOutOfMemoryError",
)


class RegistryError(BridgeError):
    """The local Schema Registry could not be built, started or stopped."""


def java_major(java: str) -> int | None:
    """The major version of a java executable (8 for 1.8), or None if it does not run."""
    release = Path(java).resolve().parent.parent / "release"
    text = ""
    with contextlib.suppress(OSError):
        text = release.read_text(encoding="utf-8", errors="replace")
    found = re.search(r'JAVA_VERSION="([0-9.]+)', text)
    if found is None:
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv
                [java, "-version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        found = re.search(r'version "([0-9.]+)', done.stderr + done.stdout)
        if found is None:
            return None
    parts = found.group(1).split(".")
    return int(parts[1]) if parts[0] == "1" and len(parts) > 1 else int(parts[0])


def resolve_java() -> str:
    """A java >= MIN_JAVA: $BRIDGE_SCHEMA_REGISTRY_JAVA, $JAVA_HOME, PATH, /usr/lib/jvm/*."""
    override = os.environ.get(JAVA_ENV)
    if override:
        major = java_major(override) if os.access(override, os.X_OK) else None
        if major is None or major < MIN_JAVA:
            raise RegistryError(
                f"{JAVA_ENV}={override} is not a java {MIN_JAVA}+ executable (found: {major})"
            )
        return override
    candidates: list[str] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(os.path.join(os.environ["JAVA_HOME"], "bin", "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    candidates += sorted(glob.glob("/usr/lib/jvm/*/bin/java"), reverse=True)
    seen: dict[str, int | None] = {}
    for java in candidates:
        real = os.path.realpath(java)
        if real in seen or not os.access(real, os.X_OK):
            continue
        seen[real] = major = java_major(real)
        if major is not None and major >= MIN_JAVA:
            return java
    found = ", ".join(f"{path} ({major})" for path, major in seen.items()) or "no java at all"
    raise RegistryError(
        f"Apicurio Registry {APICURIO_VERSION} needs Java {MIN_JAVA}+; found {found}: "
        f"install a JDK {MIN_JAVA}+ or point {JAVA_ENV} at one"
    )


def registry_home() -> Path:
    override = os.environ.get(HOME_ENV)
    return Path(override) if override else DEFAULT_HOME


def build(home: Path | None = None) -> Path:
    """Make sure the application is there: run `make registry-jars` when it is not."""
    home = home or registry_home()
    if (home / RUN_JAR).is_file():
        return home
    hint = f"run `make registry-jars` in {REPO}, or point {HOME_ENV} at a folder with {RUN_JAR}"
    make = shutil.which("make")
    if home != DEFAULT_HOME or make is None or not (REPO / "Makefile").is_file():
        raise RegistryError(f"no Schema Registry at {home / RUN_JAR}: {hint}")
    done = subprocess.run(  # noqa: S603 - fixed argv
        [make, "--no-print-directory", "-C", str(REPO), "registry-jars"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not (home / RUN_JAR).is_file():
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
        said = next((ln for ln in lines if ln.startswith("registry-jars:")), lines[-1:] or [""])
        raise RegistryError(f"could not build the Schema Registry: {''.join(said).strip()}")
    return home


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when GET <url>/subjects answers 200 (the registry is ready)."""
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=timeout_s) as response:  # noqa: S310
            return int(response.status) == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


class SchemaRegistry:
    """Start/stop one Apicurio Registry on loopback ports (`port=0` picks a free one)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        home: Path | None = None,
        java: str | None = None,
        build: bool = False,
        log_path: Path | None = None,
        jvm_flags: tuple[str, ...] = JVM_FLAGS,
    ) -> None:
        self.host = host
        self.port = port
        self.management_port = 0
        self._home = home
        self._java = java
        self._build = build
        self._log_path = log_path
        self._own_log: Path | None = None
        self._jvm_flags = jvm_flags
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """What `bridge.schema_registry_url` takes (Confluent-compatible API)."""
        return f"http://{self.host}:{self.port}{CCOMPAT_PATH}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path or self._own_log

    def command(self, home: Path, java: str) -> list[str]:
        props = {
            "quarkus.http.host": self.host,
            "quarkus.http.port": str(self.port),
            # Health and metrics listen apart (default 0.0.0.0:9000): loopback, free port.
            "quarkus.management.host": self.host,
            "quarkus.management.port": str(self.management_port),
            "quarkus.http.access-log.enabled": "false",
            "quarkus.otel.sdk.disabled": "true",
            # In-memory H2: 20 pooled connections by default, 2 are plenty here.
            "apicurio.datasource.jdbc.initial-size": "2",
            "apicurio.datasource.jdbc.min-size": "2",
            "apicurio.datasource.jdbc.max-size": "10",
        }
        return [
            java,
            *self._jvm_flags,
            *(f"-D{key}={value}" for key, value in props.items()),
            "-jar",
            str(home / RUN_JAR),
        ]

    def start(self, timeout_s: float = 120.0) -> str:
        home = build(self._home) if self._build else (self._home or registry_home())
        if not (home / RUN_JAR).is_file():
            raise RegistryError(
                f"no Schema Registry at {home / RUN_JAR}: run `make registry-jars` "
                f"or point {HOME_ENV} at a folder with {RUN_JAR}"
            )
        java = self._java or resolve_java()
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_in_use(self.host, self.port):
            raise RegistryError(
                f"port {self.port} on {self.host} is already in use; stop what listens there "
                "or choose another port"
            )
        self.management_port = free_port(self.host)
        log_path = self._log_path
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="schema-registry-", suffix=".log")
            os.close(fd)
            log_path = self._own_log = Path(name)
        with open(log_path, "ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self.command(home, java),
                cwd=tempfile.gettempdir(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not answers(self.url):
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise RegistryError(
                    f"Schema Registry exited with code {code} at start: {self._last_error()}"
                )
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"Schema Registry gave no answer at {self.url}/subjects within {timeout_s}s"
                    f" (log: {self.log_path})"
                )
            time.sleep(0.2)

    def _last_error(self) -> str:
        path = self.log_path
        try:
            lines = path.read_text(errors="replace").splitlines() if path else []
        except OSError:
            lines = []
        worst = [ln for ln in lines if " ERROR " in ln or "Error" in ln or "Exception" in ln]
        said = (worst or [ln for ln in lines if ln.strip()] or ["(no output)"])[0].strip()
        return said[:300]

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (Quarkus shuts down in well under a second), SIGKILL after `timeout_s`."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._own_log is not None:
            with contextlib.suppress(OSError):
                self._own_log.unlink()
            self._own_log = None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> SchemaRegistry:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m deploy.schema_registry`: run one in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m deploy.schema_registry", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free one")
    parser.add_argument("--log", type=Path, help="write the registry's output here")
    args = parser.parse_args(argv)
    registry = SchemaRegistry(args.host, args.port, build=True, log_path=args.log)
    started = time.monotonic()
    try:
        registry.start()
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"schema registry: Apicurio {APICURIO_VERSION} ready in "
        f"{time.monotonic() - started:.1f}s; bridge.schema_registry_url = {registry.url}",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while registry.alive():
            time.sleep(0.5)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
