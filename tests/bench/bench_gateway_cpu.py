"""Gateway CPU per request in process, without HTTP (not a test).

    python -m tests.bench.bench_gateway_cpu [--seconds 5] [--concurrency 64]

Calls the webhook endpoint (the ASGI app uvicorn would call) directly with signed
Jiko bodies from ``--concurrency`` coroutines on one loop pinned to core 0, the
broker (Apache Kafka, or the embedded one) on core 1, and prints CPU microseconds per request for:

- ``full``: verify, parse, hash, envelope, Avro, produce and wait for the ack;
- ``no publish``: the same, but the publish returns at once (what produce and the
  delivery report cost is the difference).

Together with the HTTP benchmark (``bench_gateway``) this says where a request's
CPU goes, and so how far the gateway can be from the bare-HMAC ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from deploy.topics import ensure_topics
from gateway.app import create_app
from schemas.config import load
from schemas.topics import implied_topics
from tests.bench.bench_gateway import jiko_body
from tests.bench.common import BenchBroker, add_broker_argument, machine

SECRET = "bench-cpu-secret"


class _NoPublish:
    def submit(self, *_args: Any, **_kwargs: Any) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def run(endpoint: Any, requests: list[tuple[bytes, bytes]], seconds: float, workers: int) -> float:
    """CPU microseconds per request over `seconds` of `workers` concurrent requests."""

    async def go() -> tuple[int, float]:
        next_index = 0
        done = 0
        stop = time.monotonic() + seconds

        async def send(_message: Any) -> None:
            return None

        async def worker() -> None:
            nonlocal next_index, done
            while time.monotonic() < stop and next_index < len(requests):
                body, signature = requests[next_index]
                next_index += 1
                scope = {
                    "type": "http",
                    "method": "POST",
                    "path": "/webhooks/jiko",
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"x-jiko-signature", signature),
                        (b"content-length", str(len(body)).encode()),
                    ],
                    "path_params": {"source": "jiko"},
                }

                async def receive(body: bytes = body) -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                await endpoint(scope, receive, send)
                done += 1

        before = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(worker() for _ in range(workers)))
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return done, cpu

    done, cpu = asyncio.get_event_loop().run_until_complete(go())
    return cpu / max(1, done) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    os.environ["JIKO_WEBHOOK_SECRET"] = SECRET
    bodies = [jiko_body(i) for i in range(120_000)]
    requests = [
        (b, base64.b64encode(hmac.new(SECRET.encode(), b, hashlib.sha256).digest())) for b in bodies
    ]
    with BenchBroker(args.broker) as broker, tempfile.TemporaryDirectory() as work:
        broker.pin({1})
        os.sched_setaffinity(0, {0})
        config = Path(work) / "cpu.toml"
        config.write_text(
            f'[bridge]\ntopic_prefix = "cpu{int(time.time())}"\nlog_level = "warning"\n'
            f'[kafka]\n"bootstrap.servers" = "{broker.bootstrap}"\n'
            '[sources.jiko]\nscheme = "jiko"\nsecrets = ["JIKO_WEBHOOK_SECRET"]\n',
            encoding="utf-8",
        )
        settings = load(config)
        ensure_topics(settings.admin_config(), implied_topics(settings))
        app = create_app(settings)
        endpoint = next(r for r in app.routes if getattr(r, "path", "") == "/webhooks/{source}")
        handler: Any = endpoint.endpoint  # type: ignore[attr-defined]
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        publisher = handler.publisher
        publisher.start(loop)
        half = len(requests) // 2
        full = run(handler, requests[:half], args.seconds, args.concurrency)
        handler.publisher = _NoPublish()
        bare = run(handler, requests[half:], args.seconds, args.concurrency)
        publisher.close(5)
        loop.close()
    print(
        f"gateway CPU per request, in process ({machine()}; {args.concurrency} in flight; "
        f"{broker.name})"
    )
    print(f"  full path to the Kafka ack   {full:6.1f} us")
    print(f"  without the publish          {bare:6.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
