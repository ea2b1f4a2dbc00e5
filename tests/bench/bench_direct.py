"""The direct path's own work, in process, without sockets or a broker (not a test).

    python -m tests.bench.bench_direct [--steps answer,verify,endpoint] [--requests 20000]
    python -m tests.bench.bench_direct --instructions      # under valgrind: repeatable

Feeds signed ~640-byte Jiko requests, as bytes, to the gateway's connection protocol
(`gateway.connections`) over ``--connections`` fake transports that record the answer
and send that connection's next request (as wrk does), on uvloop, in this one process.
The publish resolves at once: what this measures is everything of a request but the
sockets and Kafka. Three depths, each a prefix of the next:

- ``answer``: parse the request, take the direct path, answer (the endpoint's accept
  step replaced by a fixed answer): the HTTP layer and the answer's metrics;
- ``verify``: the same plus the HMAC verification;
- ``endpoint``: the endpoint's whole accept (verify, normalise, Avro, ``ce_*`` headers,
  metrics), the publish resolved at once.

Prints CPU microseconds per request (the median of five passes). On a shared machine
those swing by a third from minute to minute; ``--instructions`` runs this script twice
under ``valgrind --tool=callgrind`` (1,000 and 3,000 requests) and prints instructions
per request (the difference), the same to a few hundred whatever else the machine does.
Instructions are not time: C code that valgrind runs in a slower form than the hardware
does (OpenSSL's SHA-256) counts for more than its share.
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

SECRET = "bench-direct-secret-0123456789abcdef"
STEPS = ("answer", "verify", "endpoint")


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

    def __init__(self, step: str, connections: int) -> None:
        import uvloop
        from uvicorn.server import ServerState

        from gateway.app import create_app
        from gateway.connections import GuardedHttpToolsProtocol
        from gateway.server import uvicorn_config
        from gateway.verify.base import InboundRequest
        from schemas.config import load

        os.environ["JIKO_WEBHOOK_SECRET"] = SECRET
        work = Path(tempfile.mkdtemp(prefix="bench-direct-"))
        (work / "direct.toml").write_text(
            '[bridge]\ntopic_prefix = "direct"\nlog_level = "warning"\n'
            '[kafka]\n"bootstrap.servers" = "127.0.0.1:9"\n'
            '[sources.jiko]\nscheme = "jiko"\nsecrets = ["JIKO_WEBHOOK_SECRET"]\n',
            encoding="utf-8",
        )
        settings = load(work / "direct.toml")
        shutil.rmtree(work, ignore_errors=True)
        app = create_app(settings)
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        endpoint: Any = app.webhook
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
            if step != "endpoint":
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


def cpu_per_request(step: str, count: int, connections: int) -> float:
    batch = requests(count + 2000)
    driver = Driver(step, connections)
    driver.run(batch[:2000])  # warm up
    if not driver.answers or not driver.answers[0].startswith(b"HTTP/1.1 2"):
        raise SystemExit(f"{step}: unexpected answer {driver.answers[:1]!r}")
    passes = []
    size = count // 5
    for start in range(2000, 2000 + 5 * size, size):
        before = time.thread_time()
        driver.run(batch[start : start + size])
        passes.append((time.thread_time() - before) / size * 1e6)
    return statistics.median(passes)


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
    args = parser.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    if unknown := [s for s in steps if s not in STEPS]:
        raise SystemExit(f"unknown step(s) {unknown}; choose from {STEPS}")
    if args.only_run:  # one counted run, under valgrind (--instructions)
        batch = requests(3000)  # the same requests made in both runs: only serving differs
        Driver(steps[0], args.connections).run(batch[: args.only_run])
        return 0
    from schemas.compiled import compiled

    print(
        f"direct path in process ({len(compiled())} modules compiled; {args.connections} "
        "connections; the publish acknowledged at once)"
    )
    for step in steps:
        if args.instructions:
            figure = f"{instructions_per_request(step, args.connections):>9,} instructions/request"
        else:
            figure = f"{cpu_per_request(step, args.requests, args.connections):6.1f} us CPU/request"
        print(f"  {step:9s} {figure}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
