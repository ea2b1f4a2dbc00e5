"""The direct path's own work, in process, without sockets (not a test).

    python -m tests.bench.bench_direct [--steps answer,verify,endpoint,publish] [--requests 20000]
    python -m tests.bench.bench_direct --instructions      # under valgrind: repeatable

Feeds signed ~640-byte Jiko requests, as bytes, to the gateway's connection protocol
(`gateway.connections`) over ``--connections`` fake transports that record the answer
and send that connection's next request (as wrk does), on uvloop, in this one process:
everything of a request but the sockets. Four depths, each a prefix of the next:

- ``answer``: parse the request, take the direct path, answer (the endpoint's accept
  step replaced by a fixed answer): the HTTP layer and the answer's metrics;
- ``verify``: the same plus the HMAC verification;
- ``endpoint``: the endpoint's whole accept (verify, normalise, Avro, ``ce_*`` headers,
  metrics), the publish acknowledged at once;
- ``publish``: the same with the gateway's real publisher, to a broker (``--broker``;
  this process and its librdkafka threads on core 0, the broker on core 1), each answer
  after its acknowledgement: what producing and the delivery report add is the
  difference from ``endpoint`` (the publisher polls every millisecond, never on every
  loop turn: ``gateway.busy_poll_in_flight = 0``).

Prints the process's CPU microseconds per request (all threads; the median of five
passes). On a shared machine those swing by a third from minute to minute;
``--instructions`` runs this script twice under ``valgrind --tool=callgrind`` (1,000 and
3,000 requests) and prints instructions per request (the difference), the same to a
few hundred whatever else the machine does (not for ``publish``: a broker's timing is
not repeatable). Instructions are not time: C code that valgrind runs in a slower form
than the hardware does (OpenSSL's SHA-256) counts for more than its share.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.bench.bench_gateway import jiko_body
from tests.bench.common import BenchBroker, add_broker_argument

SECRET = "bench-direct-secret-0123456789abcdef"
STEPS = ("answer", "verify", "endpoint", "publish")


def requests(count: int) -> list[bytes]:
    out = []
    for index in range(count):
        body = jiko_body(index)
        signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest())
        out.append(
            b"POST /webhooks/jiko HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Content-Type: application/json\r\nx-jiko-signature: " + signature + b"\r\n\r\n" + body
        )
    return out


class _Published:
    """A publisher whose publish is acknowledged at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def submit(self, *_args: Any, **_kwargs: Any) -> asyncio.Future[None]:
        done: asyncio.Future[None] = self.loop.create_future()
        done.set_result(None)
        return done

    def queue_depth(self) -> int:
        return 0


class _Endpoint:
    """The endpoint, with its accept step replaced (the compiled class cannot be patched)."""

    def __init__(self, inner: Any, accept: Callable[..., Any]) -> None:
        self._inner = inner
        self.accept = accept

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Driver:
    """`connections` protocols on fake transports; each sends its next request once its
    answer is written."""

    def __init__(self, step: str, connections: int, bootstrap: str = "127.0.0.1:9") -> None:
        """`bootstrap`: the broker of the ``publish`` step (the others never reach one)."""
        import uvloop
        from uvicorn.server import ServerState

        from deploy.topics import ensure_topics
        from gateway.app import create_app
        from gateway.connections import GuardedHttpToolsProtocol
        from gateway.server import uvicorn_config
        from gateway.verify.base import InboundRequest
        from schemas.config import load
        from schemas.topics import implied_topics

        os.environ["JIKO_WEBHOOK_SECRET"] = SECRET
        work = Path(tempfile.mkdtemp(prefix="bench-direct-"))
        (work / "direct.toml").write_text(
            f'[bridge]\ntopic_prefix = "direct{int(time.time())}"\nlog_level = "warning"\n'
            f'[kafka]\n"bootstrap.servers" = "{bootstrap}"\n'
            '[sources.jiko]\nscheme = "jiko"\nsecrets = ["JIKO_WEBHOOK_SECRET"]\n'
            # no polling on every loop turn: with nothing else to do here, the loop's idle
            # turns while it waits for acknowledgements would count as the requests' CPU
            "[gateway]\nbusy_poll_in_flight = 0\n",
            encoding="utf-8",
        )
        settings = load(work / "direct.toml")
        shutil.rmtree(work, ignore_errors=True)
        app = create_app(settings)
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        endpoint: Any = app.webhook
        self.publisher: Any = None
        if step == "publish":  # the gateway's own publisher, started as the app's lifespan does
            ensure_topics(settings.admin_config(), implied_topics(settings))
            self.publisher = endpoint.publisher
            self.publisher.start(self.loop)
        else:
            endpoint.publisher = _Published(self.loop)
        verifier = endpoint.verifiers["jiko"]

        def answer(*_args: Any) -> Any:
            return (202, "accepted", {"status": "accepted"}, [])

        def verify(_source: Any, headers: Mapping[str, str], raw: bytes, _id: str) -> Any:
            verifier.verify(InboundRequest(headers, raw), time.time())
            return answer()

        config = uvicorn_config(app, settings, "127.0.0.1", 8080)
        config.load()
        state = ServerState()
        self.protocols = []
        for index in range(connections):
            protocol = GuardedHttpToolsProtocol(
                config=config, server_state=state, app_state={}, _loop=self.loop
            )
            protocol.connection_made(_Transport(self, index))
            if step in ("answer", "verify"):
                protocol._endpoint = _Endpoint(endpoint, answer if step == "answer" else verify)  # type: ignore[assignment]
            self.protocols.append(protocol)
        self._pending: Iterator[bytes] = iter(())
        self._outstanding = 0
        self._finished: asyncio.Future[None] | None = None
        self.answers: list[bytes] = []

    def send_next(self, index: int) -> None:
        request = next(self._pending, None)
        if request is None:
            if self._outstanding == 0 and self._finished and not self._finished.done():
                self._finished.set_result(None)
            return
        self._outstanding += 1
        self.protocols[index].data_received(request)

    def answered(self, index: int, data: bytes) -> None:
        if len(self.answers) < 3:
            self.answers.append(data)
        self._outstanding -= 1
        self.loop.call_soon(self.send_next, index)

    def run(self, batch: list[bytes]) -> None:
        async def go() -> None:
            self._pending = iter(batch)
            self._finished = self.loop.create_future()
            for index in range(len(self.protocols)):
                self.send_next(index)
            await self._finished

        self.loop.run_until_complete(go())

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close(5)
        self.loop.close()


class _Transport(asyncio.Transport):
    def __init__(self, driver: Driver, index: int) -> None:
        super().__init__()
        self._driver, self._index, self._closing = driver, index, False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._driver.answered(self._index, bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def cpu_per_request(step: str, count: int, connections: int, bootstrap: str) -> float:
    batch = requests(count + 2000)
    driver = Driver(step, connections, bootstrap)
    try:
        driver.run(batch[:2000])  # warm up
        if not driver.answers or not driver.answers[0].startswith(b"HTTP/1.1 2"):
            raise SystemExit(f"{step}: unexpected answer {driver.answers[:1]!r}")
        passes = []
        size = count // 5
        for start in range(2000, 2000 + 5 * size, size):
            before = time.process_time()  # every thread: librdkafka's too, for `publish`
            driver.run(batch[start : start + size])
            passes.append((time.process_time() - before) / size * 1e6)
        return statistics.median(passes)
    finally:
        driver.close()


def instructions_per_request(step: str, connections: int) -> int:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind")
    totals = []
    for count in (1000, 3000):
        out = subprocess.run(
            [
                *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
                sys.executable, "-m", "tests.bench.bench_direct",
                "--steps", step, "--connections", str(connections), "--only-run", str(count),
            ],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        found = re.search(r"Collected : (\d+)", out.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) // 2000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--only-run", type=int, default=0, help=argparse.SUPPRESS)
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    if unknown := [s for s in steps if s not in STEPS]:
        raise SystemExit(f"unknown step(s) {unknown}; choose from {STEPS}")
    if args.instructions and "publish" in steps:
        if args.steps != ",".join(STEPS):
            raise SystemExit("--instructions counts answer, verify and endpoint, not publish")
        steps.remove("publish")
    if args.only_run:  # one counted run, under valgrind (--instructions)
        batch = requests(3000)  # the same requests made in both runs: only serving differs
        Driver(steps[0], args.connections).run(batch[: args.only_run])
        return 0
    from schemas.compiled import compiled

    broker = BenchBroker(args.broker) if "publish" in steps else None
    if broker is not None:
        broker.start()
        broker.pin({1})
        os.sched_setaffinity(0, {0})  # and the threads librdkafka starts later
    try:
        print(
            f"direct path in process ({len(compiled())} modules compiled; {args.connections} "
            "connections; up to `endpoint` the publish is acknowledged at once"
            + (f"; `publish` on {broker.name}" if broker is not None else "")
            + ")"
        )
        for step in steps:
            if args.instructions:
                count = instructions_per_request(step, args.connections)
                figure = f"{count:>9,} instructions/request"
            else:
                bootstrap = broker.bootstrap if broker is not None else "127.0.0.1:9"
                cpu = cpu_per_request(step, args.requests, args.connections, bootstrap)
                figure = f"{cpu:6.1f} us CPU/request"
            print(f"  {step:9s} {figure}", flush=True)
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
