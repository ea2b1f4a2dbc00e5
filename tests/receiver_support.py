"""A real HTTP receiver for fan-out tests: uvicorn in a thread, behaviour scripted per request.

Each request pops the next action of its event id's script (``script[event_id]``),
else of its path's script (``path_script[path]``), else ``default``:

- ``"200"``, ``"500"``, ``"410"``, ... answer that status;
- ``"429:<s>"`` 429 with ``Retry-After: <s>``;
- ``"hang"`` never answer (the sink's timeout fires);
- ``"close"`` start a response, then drop the connection;
- ``"delay:<s>"`` answer 200 after <s> seconds.

Signatures are checked with the Standard Webhooks formula written out here,
independently of the code under test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consumers.fanout.metrics import FanoutMetrics
from consumers.fanout.process import Fanout
from deploy.broker import free_port
from schemas import config
from schemas.config import Settings
from schemas.envelope import Envelope, Verification
from schemas.records import ce_headers
from schemas.serde import EnvelopeSerializer


def expected_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


@dataclass
class Delivery:
    path: str
    event_id: str
    body: bytes
    headers: dict[str, str]
    verified: bool
    action: str
    at: float


class _Closed(Exception):
    pass


@dataclass
class ScriptedReceiver:
    secret: str
    default: str = "200"
    script: dict[str, list[str]] = field(default_factory=dict)
    path_script: dict[str, list[str]] = field(default_factory=dict)
    path_default: dict[str, str] = field(default_factory=dict)
    requests: list[Delivery] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.port = self.port or free_port()
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            lifespan="off",
            timeout_graceful_shutdown=1,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def url(self, path: str = "events") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def start(self) -> ScriptedReceiver:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def _next_action(self, path: str, event_id: str) -> str:
        with self.lock:
            for queue in (self.script.get(event_id), self.path_script.get(path)):
                if queue:
                    return queue.pop(0)
            return self.path_default.get(path, self.default)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        event_id = headers.get("webhook-id", "")
        expected = expected_signature(
            self.secret, event_id, headers.get("webhook-timestamp", ""), body
        )
        verified = expected in headers.get("webhook-signature", "").split()
        path = request.url.path.lstrip("/")
        action = self._next_action(path, event_id)
        with self.lock:
            self.requests.append(
                Delivery(path, event_id, body, headers, verified, action, time.monotonic())
            )
        if action == "hang":
            await asyncio.sleep(3600)
        if action.startswith("delay:"):
            await asyncio.sleep(float(action.split(":", 1)[1]))
            return Response("ok")
        if action == "close":
            return _DropConnection()
        if action.startswith("429:"):
            return Response("slow down", 429, headers={"retry-after": action.split(":", 1)[1]})
        return Response("x", int(action))

    # ---------------------------------------------------------------- queries

    def snapshot(self, path: str | None = None) -> list[Delivery]:
        with self.lock:
            return [d for d in self.requests if path is None or d.path == path]

    def succeeded(self, path: str | None = None) -> list[Delivery]:
        return [d for d in self.snapshot(path) if d.action.startswith(("200", "delay:"))]

    def wait_for(
        self, predicate: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition"
    ) -> None:
        wait_for(predicate, timeout_s, what)


def wait_for(
    predicate: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition"
) -> None:
    """Poll `predicate` until true; fail the test with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class _DropConnection(Response):
    """Sends the status line and headers, then fails: uvicorn closes the connection."""

    def __init__(self) -> None:
        super().__init__(b"", 200, headers={"content-length": "100"})

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
        )
        raise _Closed("drop the connection mid-response")


# --------------------------------------------------------------------------- fan-out harness

SECRET_ENV = "FANOUT_TEST_SECRET"
SECRET = "whsec_" + base64.b64encode(b"fanout-test-signing-key-32-bytes").decode()
PROVIDERS = ("acme", "beta")


def raw_config(
    bootstrap: str, prefix: str, sinks: dict[str, dict[str, object]], metrics_port: int = 0
) -> dict[str, object]:
    """A config table (as tomllib would return it) for fan-out tests."""
    return {
        "bridge": {"topic_prefix": prefix},
        "kafka": {
            "bootstrap.servers": bootstrap,
            "consumer": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"},
        },
        "topics": {"partitions": 3},
        "fanout": {"metrics_port": metrics_port},
        "sources": {p: {"scheme": "none", "allow_unverified": True} for p in PROVIDERS},
        "sinks": sinks,
    }


def make_settings(bootstrap: str, prefix: str, sinks: dict[str, dict[str, object]]) -> Settings:
    return config.parse(raw_config(bootstrap, prefix, sinks), {SECRET_ENV: SECRET})


def envelope(
    event_id: str,
    key: str,
    event_type: str = "thing.updated",
    provider: str = "acme",
    seq: int = 0,
    source: str | None = None,
) -> Envelope:
    now = int(time.time() * 1_000_000)
    body = json.dumps({"id": event_id, "key": key, "seq": seq}).encode()
    return Envelope(
        event_id=event_id,
        event_id_origin="PAYLOAD",
        provider=provider,
        source=source or provider,
        event_type=event_type,
        occurred_at=now - 1000 + seq,
        occurred_at_origin="PAYLOAD",
        received_at=now,
        ordering_key=key,
        content_type="application/json",
        body=body,
        headers={},
        verification=Verification(scheme="none"),
        request_id=f"req-{event_id}",
    )


def produce(
    bootstrap: str,
    topic: str,
    envelopes: list[Envelope],
    extra_headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    serialize = EnvelopeSerializer()
    for env in envelopes:
        producer.produce(
            topic,
            key=env.ordering_key.encode(),
            value=serialize(env, topic),
            headers=[*ce_headers(env), *(extra_headers or [])],
        )
    assert producer.flush(30) == 0


def body_of(delivery: Delivery) -> dict[str, Any]:
    data = json.loads(delivery.body)
    assert isinstance(data, dict)
    return data


class FanoutThread:
    """`Fanout` in a thread with its own event loop and metrics registry."""

    def __init__(
        self, settings: Settings, sinks: list[str] | None = None, drain_timeout_s: float = 5.0
    ) -> None:
        self.registry = CollectorRegistry()
        self.fanout = Fanout(
            settings,
            sinks or list(settings.sinks),
            FanoutMetrics(self.registry),
            env={SECRET_ENV: SECRET},
            drain_timeout_s=drain_timeout_s,
            commit_interval_s=0.1,
        )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.fanout.run())
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> FanoutThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fanout.stop()
        self._thread.join(60)
        assert not self._thread.is_alive(), "fan-out did not stop"
        assert self.error is None, repr(self.error)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Read `expected` records of `topic` from the start (assign(): no group join)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is not None and meta.error is None and meta.partitions:
                break
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        out: list[Any] = []
        while len(out) < expected:
            assert time.monotonic() < deadline, f"{topic}: {len(out)} of {expected} records"
            out += [m for m in consumer.consume(100, 0.2) if m.error() is None]
        return out
    finally:
        consumer.close()
