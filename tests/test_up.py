"""`webhook-bridge up` (what `make run` runs): everything comes up, answers, stops on Ctrl-C,
keeps Apache Kafka's data and the demo secrets across runs, and restarts whatever dies."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType

import httpx
import pytest

from deploy import demo_secrets
from deploy.broker import free_port, port_in_use
from deploy.send import prepare
from gateway.sources import verify_context
from schemas import config as config_module
from tests.receiver_support import ScriptedReceiver
from tests.support import DEMO_ENV

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
SECRET_VARS = tuple(DEMO_ENV)
# The receiver's line; other processes' output on the same pipe can be glued to it.
DELIVERED = re.compile(r"event id=(sha256:[0-9a-f]{64}) provider=\S+ type=\S+ verified=yes")


def demo_config_on_free_ports(tmp_path: Path, sink_extra: str = "") -> tuple[Path, dict[str, int]]:
    ports = {
        name: free_port()
        for name in ("broker", "gateway", "compactor", "reorderer", "fanout", "receiver")
    }
    text = (REPO / "deploy" / "demo.toml").read_text()
    text = text.replace("127.0.0.1:9092", f"127.0.0.1:{ports['broker']}")
    text = text.replace("port = 8000", f"port = {ports['gateway']}")
    text = text.replace("127.0.0.1:8100", f"127.0.0.1:{ports['receiver']}")
    for name, default in (("compactor", 9101), ("reorderer", 9102), ("fanout", 9103)):
        text = text.replace(f"metrics_port = {default}", f"metrics_port = {ports[name]}")
    text = text.replace(
        'secret = "DEMO_RECEIVER_SECRET"\n', f'secret = "DEMO_RECEIVER_SECRET"\n{sink_extra}'
    )
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path, ports


def env_without_secrets(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    return {**env, **extra}


class Up:
    """`webhook-bridge up` as `make run` runs it, in `workdir` (so `.state/` is there)."""

    def __init__(
        self, config: Path, workdir: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "up", "--config", str(config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env if env is not None else env_without_secrets(),
            cwd=workdir,
        )
        stdout = self.process.stdout
        assert stdout is not None
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(line.rstrip("\n") for line in stdout), daemon=True
        )
        self._reader.start()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float, count: int = 1) -> re.Match[str]:
        """The `count`-th line matching `pattern` (a regex), or fail with the output's tail."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [m for m in map(re.compile(pattern).search, list(self.lines)) if m]
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline or self.process.poll() is not None:
                lines = list(self.lines)
                story = "\n".join(x for x in lines if x.startswith("[up]"))  # the supervisor's
                tail = "\n".join(x for x in lines[-400:] if not x.startswith("%"))
                pytest.fail(
                    f"no {count}x {pattern!r} within {timeout_s}s; every [up] line:\n"
                    f"{story[-8000:]}\n\nthe output's tail:\n{tail[-12000:]}"
                )
            time.sleep(0.1)

    def running(self, timeout_s: float = 150) -> None:
        self.wait_for("webhook-bridge is running", timeout_s)

    def pid(self, pattern: str) -> int:
        """The pid in the last `[up]` line matching `pattern` (which captures it)."""
        for line in reversed(list(self.lines)):
            match = re.search(pattern, line)
            if line.startswith("[up]") and match:
                return int(match.group(1))
        pytest.fail(f"no line matching {pattern!r}")

    def delivered(self) -> Counter[str]:
        """Event id -> deliveries the demo receiver printed, signature verified."""
        return Counter(m.group(1) for line in list(self.lines) for m in DELIVERED.finditer(line))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(10)
        return self.process.returncode

    def __enter__(self) -> Up:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Sender:
    """Signed jiko webhooks to the gateway, one every `every_s`, from a thread; remembers
    which event ids were answered 200 (anything else is not acknowledged: a provider retries)."""

    def __init__(
        self,
        config: Path,
        secrets_file: Path,
        every_s: float = 0.05,
        env: dict[str, str] | None = None,
    ) -> None:
        if env is None:
            env, _ = demo_secrets.with_fallback(env_without_secrets(), secrets_file)
        self.settings = config_module.load(config, env)
        self.context = verify_context(self.settings, "jiko")
        self.url = f"http://127.0.0.1:{self.settings.gateway.port}/webhooks/jiko"
        self.every_s = every_s
        self.accepted: list[str] = []
        self.requests: dict[str, tuple[bytes, dict[str, str]]] = {}  # accepted id -> request
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def send_one(self, client: httpx.Client) -> str | None:
        self._n += 1
        body, headers = prepare(
            self.settings.sources["jiko"],
            self.context,
            event_type="card.transaction.approved",
            event_id=f"evt_up_{self._n}_{time.time_ns()}",
            now=time.time(),
        )
        return self.post(client, body, headers)

    def resend(self, client: httpx.Client, accepted: str) -> str | None:
        """The provider's retry: the very same request again."""
        return self.post(client, *self.requests[accepted])

    def post(self, client: httpx.Client, body: bytes, headers: dict[str, str]) -> str | None:
        try:
            response = client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError:
            self.refused += 1
            return None
        if response.status_code != 200:
            self.refused += 1
            return None
        accepted = str(response.json()["event_id"])
        self.accepted.append(accepted)
        self.requests[accepted] = (body, headers)
        return accepted

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                self.send_one(client)
                self._stop.wait(self.every_s)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def wait_delivered(up: Up, ids: list[str], timeout_s: float) -> Counter[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = up.delivered()
        missing = [i for i in ids if i not in got]
        if not missing:
            return got
        if time.monotonic() > deadline:
            pytest.fail(
                f"{len(missing)} of {len(ids)} events answered 200 were not delivered "
                f"within {timeout_s}s, e.g. {missing[:3]}\n"
                + "\n".join(x for x in up.lines[-300:] if not x.startswith("%"))[-5000:]
            )
        time.sleep(0.2)


def wait_received(receiver: ScriptedReceiver, ids: set[str]) -> None:
    receiver.wait_for(
        lambda: {d.event_id for d in receiver.succeeded()} >= ids, 60, "deliveries there"
    )
    assert all(d.verified for d in receiver.snapshot())


# --------------------------------------------------------------------------- start, stop


def test_up_starts_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """On a machine without Java: the embedded broker, with one line that says what it
    lacks and why it was chosen; every process comes up, and Ctrl-C stops it all."""
    config, ports = demo_config_on_free_ports(tmp_path)
    no_java = tmp_path / "bin"
    no_java.mkdir()
    with Up(config, tmp_path, env=env_without_secrets(PATH=str(no_java))) as up:
        up.running(120)
        assert re.search(
            r"^\[up\] embedded broker \(Tansu\) on 127\.0\.0\.1:\d+ \(pid \d+\), memory only: "
            r"nothing it holds survives a restart of it or of up \(Apache Kafka needs Java 17\+ "
            r"and no `java` was found on PATH\)$",
            up.output,
            re.M,
        )
        assert "[up] config ok: 7 sources, 2 sinks (the checks of check-config)" in up.output
        base = f"http://127.0.0.1:{ports['gateway']}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
        for name in ("compactor", "reorderer", "fanout", "receiver:demo-receiver"):
            assert f"[up] {name} up (pid" in up.output, up.output
        for name in ("compactor", "reorderer", "fanout"):
            assert httpx.get(f"http://127.0.0.1:{ports[name]}/healthz").status_code == 200
        # Each process holds only the secrets it uses.
        for name, held, not_held in (
            ("gateway", "JIKO_WEBHOOK_SECRET", "DEMO_RECEIVER_SECRET"),
            ("compactor", None, "JIKO_WEBHOOK_SECRET"),
            ("compactor", None, "DEMO_RECEIVER_SECRET"),
            ("fanout", "DEMO_RECEIVER_SECRET", "SVIX_WEBHOOK_SECRET"),
            ("receiver:demo-receiver", "DEMO_RECEIVER_SECRET", "JIKO_WEBHOOK_SECRET"),
        ):
            pid = up.pid(rf"\] {re.escape(name)} up \(pid (\d+)\)")
            names = {
                entry.split(b"=", 1)[0].decode()
                for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            }
            assert held is None or held in names, (name, held)
            assert not_held not in names, (name, not_held)
        # The secret values are not printed: they are in the state file.
        assert "whsec_" not in up.output and "demo_" not in up.output.replace("demo_rec", "")
        # `send` in a second terminal, no secret exported: it reads the state file.
        sent = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "send", "jiko", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            env=env_without_secrets(),
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.startswith("200 ")
        # ... and the newcomer sees it arrive, signed, at the demo receiver.
        event_id = json.loads(sent.stdout[4:])["event_id"]
        up.wait_for(rf"event id={re.escape(event_id)} provider=jiko \S+ verified=yes", 60)
        assert up.stop() == 0, up.output
    assert "[up] embedded broker stopped" in up.output
    for port in (ports["gateway"], ports["broker"], ports["receiver"]):
        assert not port_in_use("127.0.0.1", port)


def test_up_refuses_a_broker_address_held_by_something_else(tmp_path: Path) -> None:
    """A port taken by a process that is not Kafka: one clear line, no traceback."""
    config, ports = demo_config_on_free_ports(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["broker"]))
        squatter.listen()
        done = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "up", "--config", str(config)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            env={**os.environ, **DEMO_ENV},
        )
    assert done.returncode != 0
    assert f"127.0.0.1:{ports['broker']} is taken by something that does not answer as Kafka" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not port_in_use("127.0.0.1", ports["gateway"])


def test_up_validates_the_config_like_check_config_before_starting_anything(
    tmp_path: Path,
) -> None:
    config, ports = demo_config_on_free_ports(tmp_path, 'timeout_s = "soon"\n')
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "up", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env=env_without_secrets(),
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "config error: sinks.demo-receiver.timeout_s: must be a number of seconds; "
        "valid: a number > 0"
    )
    assert "[up] embedded broker" not in done.stdout and "Apache Kafka" not in done.stdout
    assert not (tmp_path / ".state" / "kafka").exists()
    for port in ports.values():
        assert not port_in_use("127.0.0.1", port)


# --------------------------------------------------------------------------- demo receiver


def test_up_starts_no_demo_receiver_on_a_port_your_own_service_holds(tmp_path: Path) -> None:
    """`make run CONFIG=my.toml` with an http sink to your service on 127.0.0.1: `up` starts
    no receiver there (not asked for), and a sink that asks for one on a port another
    process holds gets a line instead; the deliveries reach your service."""
    secret = DEMO_ENV["DEMO_RECEIVER_SECRET"]
    mine = ScriptedReceiver(secret).start()
    theirs = ScriptedReceiver(secret).start()
    try:
        config, _ = demo_config_on_free_ports(tmp_path)
        text = config.read_text().replace("demo_receiver = true", "")
        text = text.replace(
            re.findall(r'url = "(http://127\.0\.0\.1:\d+/events)"', text)[0], mine.url()
        )
        text += f"""
[sinks.held]
type = "http"
url = "{theirs.url()}"
secret = "DEMO_RECEIVER_SECRET"
demo_receiver = true
"""
        config.write_text(text)
        with Up(
            config, tmp_path, "--broker", "embedded", env=env_without_secrets(**DEMO_ENV)
        ) as up:
            up.running(120)
            assert "receiver:demo-receiver" not in up.output
            assert (
                f"[up] receiver:held: not started: 127.0.0.1:{theirs.port} is held by another "
                "process, which gets this sink's deliveries" in up.output
            )
            with httpx.Client() as client:
                sender = Sender(config, Path("unused"), env=env_without_secrets(**DEMO_ENV))
                sent = [sender.send_one(client) for _ in range(3)]
            assert all(sent), sender.refused
            for receiver in (mine, theirs):
                wait_received(receiver, {i for i in sent if i})
            assert up.stop() == 0
    finally:
        mine.stop()
        theirs.stop()


# --------------------------------------------------------------------------- state across runs


@pytest.mark.real_kafka
def test_up_on_apache_kafka_keeps_events_and_demo_secrets_across_a_restart(
    tmp_path: Path,
) -> None:
    """`make run` twice: the second run uses the same Kafka data and demo secrets, so
    events accepted just before Ctrl-C are delivered after the restart, each id once."""
    config, ports = demo_config_on_free_ports(tmp_path)
    secrets_file = tmp_path / ".state" / "demo-secrets.env"
    with Up(config, tmp_path) as first:
        first.running()
        assert re.search(r"\[up\] Apache Kafka \S+ on 127\.0\.0\.1:\d+ \(pid \d+\)", first.output)
        assert f"data kept across runs in .state/kafka/{ports['broker']}" in first.output
        assert "embedded broker" not in first.output
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        kept = demo_secrets.read(secrets_file)
        assert set(kept) == set(SECRET_VARS)
        with httpx.Client() as client:
            sender = Sender(config, secrets_file)
            early = sender.send_one(client)
            assert early is not None
            wait_delivered(first, [early], 60)
            # The reorderer holds events for its 5 s window: these are in Kafka, not
            # delivered, when Ctrl-C arrives.
            pending = [sender.send_one(client) for _ in range(5)]
        assert all(pending), sender.refused
        assert first.stop() == 0
    pending_ids = [i for i in pending if i]
    assert "[up] Apache Kafka stopped" in first.output
    not_yet = [i for i in pending_ids if i not in first.delivered()]
    assert not_yet, "everything was delivered before the restart: the test shows nothing"

    with Up(config, tmp_path) as second:
        second.running()
        assert "0 new, 8 kept from the last run" in second.output
        assert demo_secrets.read(secrets_file) == kept
        with httpx.Client() as client:
            # A provider's retry of an id delivered in the first run: accepted, dropped.
            assert sender.resend(client, early) == early
            # Signed with the first run's secrets: the second run kept them.
            fresh = sender.send_one(client)
        assert fresh is not None
        wait_delivered(second, [*pending_ids, fresh], 90)
        # The retry is older than the reorder window: had the compactor let it through, it
        # would have been released at once, before `fresh` (held for the window).
        time.sleep(1)
        assert second.stop() == 0
    both = first.delivered() + second.delivered()
    assert {i: n for i, n in both.items() if n > 1} == {}
    assert {*pending_ids, early, fresh} <= set(both)


# --------------------------------------------------------------------------- supervision


def kill_and_see_restart(up: Up, name: str, pid_pattern: str) -> int:
    """kill -9 the process `up` named `name`; wait for `up` to notice and say so."""
    pid = up.pid(pid_pattern)
    os.kill(pid, signal.SIGKILL)
    up.wait_for(
        rf"^\[up\] {re.escape(name)} \(pid {pid}\) exited killed by SIGKILL; restarting it", 15
    )
    return pid


def wait_accepted(sender: Sender, more: int, timeout_s: float = 60) -> None:
    target = len(sender.accepted) + more
    deadline = time.monotonic() + timeout_s
    while len(sender.accepted) < target:
        assert time.monotonic() < deadline, f"gateway accepted nothing ({sender.refused} refused)"
        time.sleep(0.05)


@pytest.mark.real_kafka
def test_up_restarts_each_killed_process_and_loses_nothing_answered_200(tmp_path: Path) -> None:
    """kill -9 of the gateway, the demo receiver, the compactor, the reorderer and the
    fan-out, one after the other while webhooks keep arriving: each is restarted once,
    the others keep running, and every event answered 200 reaches the receiver."""
    config, _ = demo_config_on_free_ports(tmp_path)
    names = ("gateway", "receiver:demo-receiver", "compactor", "reorderer", "fanout")
    with Up(config, tmp_path) as up:
        up.running()
        with Sender(config, tmp_path / ".state" / "demo-secrets.env") as sender:
            for name in names:
                wait_accepted(sender, 5)
                kill_and_see_restart(up, name, rf"\] {re.escape(name)} up \(pid (\d+)\)")
                time.sleep(1.5)
            for name in names:
                up.wait_for(rf"^\[up\] {re.escape(name)} up \(pid \d+\).*, restart 1$", 60)
            wait_accepted(sender, 20)  # through the restarted gateway
        got = wait_delivered(up, sender.accepted, 120)
        assert "restart 2" not in up.output  # nothing else died
        assert up.stop() == 0
    assert len(sender.accepted) >= 45
    assert set(sender.accepted) <= set(got)


@pytest.mark.real_kafka
def test_up_restarts_a_killed_apache_kafka_and_loses_nothing_answered_200(
    tmp_path: Path,
) -> None:
    config, _ = demo_config_on_free_ports(tmp_path)
    with Up(config, tmp_path) as up:
        up.running()
        with Sender(config, tmp_path / ".state" / "demo-secrets.env", every_s=0.1) as sender:
            wait_accepted(sender, 10)
            killed_at = time.monotonic()
            pid = kill_and_see_restart(
                up, "Apache Kafka", r"Apache Kafka \S+ on 127\.0\.0\.1:\d+ \(pid (\d+)\)"
            )
            line = up.wait_for(rf"^\[up\] Apache Kafka \(pid {pid}\) exited.*", 1).group(0)
            assert "restarting it on its data" in line
            up.wait_for(r"^\[up\] Apache Kafka up again \(pid \d+\); topics: 0 re-created$", 120)
            outage_s = time.monotonic() - killed_at
            up.wait_for(r"^\[up\] stopping compactor, reorderer, fanout until it is back: ", 5)
            for name in ("compactor", "reorderer", "fanout"):
                up.wait_for(rf"^\[up\] {name} up \(pid \d+\).*, restart 1$", 60)
            wait_accepted(sender, 10)
        assert sender.refused > 0  # 503 while the broker was down: not acknowledged
        got = wait_delivered(up, sender.accepted, 120)
        assert "[up] gateway (pid" not in up.output  # the gateway rode it out
        # With every client running, librdkafka logged ~100 'Connection refused' lines a
        # second while the broker was down; up stops the stages until it is back.
        refused = sum("Connection refused" in line for line in up.lines)
        assert refused / outage_s < 20, f"{refused} 'Connection refused' lines in {outage_s:.0f} s"
        assert up.stop() == 0
    assert set(sender.accepted) <= set(got)


def test_up_restarts_a_killed_embedded_broker_and_says_what_was_lost(tmp_path: Path) -> None:
    """The memory-only broker comes back empty: `up` says so, re-creates every topic,
    restarts the Kafka clients, and new events flow again."""
    from schemas.topics import implied_topics

    config, _ = demo_config_on_free_ports(tmp_path)
    with Up(config, tmp_path, "--broker", "embedded") as up:
        up.running(120)
        secrets_file = tmp_path / ".state" / "demo-secrets.env"
        sender = Sender(config, secrets_file)
        pid = kill_and_see_restart(
            up, "embedded broker", r"embedded broker \(Tansu\) on \S+ \(pid (\d+)\)"
        )
        line = up.wait_for(rf"^\[up\] embedded broker \(pid {pid}\) exited.*", 1).group(0)
        assert line.endswith(
            "restarting it. It is memory only: every topic, record, consumer offset and "
            "producer id it held is lost, with the events answered 200 and not yet delivered"
        )
        created = up.wait_for(r"^\[up\] embedded broker up again \(pid \d+\); topics: (\d+) ", 30)
        assert int(created.group(1)) == len(implied_topics(sender.settings))
        up.wait_for(r"^\[up\] stopping gateway, compactor, reorderer, fanout until it is ", 5)
        for name in ("gateway", "compactor", "reorderer", "fanout"):
            up.wait_for(rf"^\[up\] {name} up \(pid \d+\).*, restart 1$", 60)
        with httpx.Client() as client:
            sent = [sender.send_one(client) for _ in range(3)]
        assert all(sent), sender.refused
        wait_delivered(up, [i for i in sent if i], 60)
        assert up.stop() == 0


def test_up_restarts_a_stalled_process_whose_healthz_fails(tmp_path: Path) -> None:
    """A process that is alive but stuck (here: SIGSTOP) is found by its /healthz and
    restarted, as a hang inside librdkafka would be."""
    config, _ = demo_config_on_free_ports(tmp_path)
    with Up(config, tmp_path, "--broker", "embedded") as up:
        up.running(120)
        pid = up.pid(r"\] reorderer up \(pid (\d+)\)")
        os.kill(pid, signal.SIGSTOP)
        stalled = up.wait_for(
            rf"^\[up\] reorderer \(pid {pid}\): \S+ has failed for (\d+) s "
            r"\(a stalled process\); restarting it$",
            40,
        )
        assert int(stalled.group(1)) >= 10
        up.wait_for(rf"^\[up\] reorderer \(pid {pid}\) exited killed by SIGKILL; restarting", 15)
        up.wait_for(r"^\[up\] reorderer up \(pid \d+\).*, restart 1$", 60)
        sender = Sender(config, tmp_path / ".state" / "demo-secrets.env")
        with httpx.Client() as client:
            sent = [sender.send_one(client) for _ in range(3)]
        assert all(sent), sender.refused
        wait_delivered(up, [i for i in sent if i], 60)
        assert "restart 2" not in up.output
        assert up.stop() == 0


def test_demo_receiver_option_is_validated_with_the_http_sink() -> None:
    from consumers.fanout.policy import validate_sink
    from consumers.sinks.http import demo_receiver_port
    from schemas.errors import ConfigError
    from tests.support import settings_from_toml

    def sink(options: str) -> config_module.SinkSettings:
        text = (
            '[kafka]\n"bootstrap.servers" = "127.0.0.1:9092"\n'
            f'[sinks.s]\ntype = "http"\nsecret = "DEMO_RECEIVER_SECRET"\n{options}\n'
        )
        return settings_from_toml(text).sinks["s"]

    ok = sink('url = "http://localhost:8100/events"\ndemo_receiver = true')
    validate_sink(ok, DEMO_ENV)
    assert demo_receiver_port(ok) == 8100
    assert demo_receiver_port(sink('url = "http://127.0.0.1:8100/events"')) is None
    for options, problem in (
        ('url = "http://127.0.0.1:8100/"\ndemo_receiver = "yes"', "must be true or false"),
        ('url = "http://10.0.0.5:8100/"\ndemo_receiver = true', "the demo receiver runs on"),
        ('url = "http://127.0.0.1/"\ndemo_receiver = true', "the demo receiver runs on"),
        (
            'url = "https://127.0.0.1:8100/"\ndemo_receiver = true',
            "the demo receiver serves http://",
        ),
    ):
        with pytest.raises(ConfigError, match="sinks.s.demo_receiver: " + problem):
            validate_sink(sink(options), DEMO_ENV)


def test_apache_kafka_cluster_ids_never_look_like_an_option() -> None:
    """`make run`'s first start formats its storage with a fresh cluster id; one starting
    with '-' made kafka-storage fail (about 1 start in 64)."""
    import base64

    from deploy.apache_kafka import _cluster_id

    for _ in range(3000):
        cluster_id = _cluster_id()
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
