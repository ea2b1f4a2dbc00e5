"""The webhook endpoint's steps: verify, normalise, serialise, publish, answer.

`WebhookEndpoint` is driven two ways (see its doc): as an ASGI app, and by the connection
itself (`gateway.connections`). It lives apart from the Starlette app (`gateway.app`) so
that mypyc compiles it (schemas/compiled.py): these steps are most of a request's own
Python. Every answer comes from `ANSWERS`, one table.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import orjson
from starlette.types import Receive, Scope, Send

from gateway.metrics import NO_MODE, GatewayMetrics, adder
from gateway.normalize import normalize
from gateway.publisher import Publisher, PublishError
from gateway.verify.base import REASONS, InboundRequest, Verifier
from schemas import logs
from schemas.config import Settings, SourceSettings
from schemas.deadlines import Deadlines
from schemas.envelope import Envelope
from schemas.errors import VerificationError
from schemas.records import ce_headers, quarantine_headers
from schemas.serde import EnvelopeSerializer
from schemas.topics import TopicNames, names

RETRY_AFTER_S = "5"
CLOSE = [(b"connection", b"close")]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# A new request id is 128 random bits from the random module, not os.urandom: an id
# correlates log lines and answers and guards nothing, and a getrandom() syscall per
# request was 6 % of the gateway's CPU (docs/benchmarks.md). The module's generator is
# seeded from os.urandom at start and again in a forked child (no two workers repeat).
_random_bits = random.getrandbits


@dataclass(frozen=True)
class Answer:
    status: int
    outcome: str  # metric label
    body: dict[str, str]


# situation -> HTTP answer; the one place that maps outcomes to status codes
ANSWERS: dict[str, Answer] = {
    "not_found": Answer(404, "not_found", {"error": "unknown source"}),
    "method_not_allowed": Answer(405, "method_not_allowed", {"error": "use POST"}),
    "unauthorized": Answer(401, "unauthorized", {"error": "verification failed"}),
    "too_large": Answer(413, "too_large", {"error": "body too large"}),
    # the broker or the producer refused the record's size: a retry cannot fix it
    "too_large_for_kafka": Answer(413, "too_large", {"error": "too large for Kafka"}),
    "too_slow": Answer(408, "too_slow", {"error": "body not received in time"}),
    "unavailable": Answer(503, "unavailable", {"error": "not acknowledged by Kafka, retry"}),
    "internal_error": Answer(500, "internal_error", {"error": "internal error, retry"}),
}


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client disconnected before sending its whole body: nobody to answer."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """Read the request body, stopping as soon as it exceeds `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def header_map(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's headers by lower-case name; the first of repeated ones, as Starlette does."""
    out: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1").lower()
        if name not in out:
            out[name] = raw_value.decode("latin-1")
    return out


Result = tuple[int, str, dict[str, str], list[tuple[bytes, bytes]]]
"""What the endpoint answers: status, outcome (metric label), JSON body, extra headers."""


class Pending:
    """A request whose envelope is on its way to Kafka: `settle` answers it once `future`
    is done (acknowledged, or failed with a PublishError). A plain class, not a dataclass:
    compiled, its __init__ is C (a dataclass's is generated Python)."""

    __slots__ = ("envelope", "future", "request_id", "source", "started", "topic")

    def __init__(
        self,
        source: SourceSettings,
        envelope: Envelope,
        topic: str,
        request_id: str,
        future: asyncio.Future[None],
        started: float,  # perf_counter when the publish began
    ) -> None:
        self.source = source
        self.envelope = envelope
        self.topic = topic
        self.request_id = request_id
        self.future = future
        self.started = started


class WebhookEndpoint:
    """The hot path. Its steps are plain methods (`request_id`, `refuse`, `accept`,
    `settle`, `finish`, `render`), driven two ways: as an ASGI app (`__call__`: what
    `GatewayApp` calls for a POST, and Starlette's routes for any other method), and by
    the connection itself for a webhook POST whose body is all there
    (`gateway.connections`), with no ASGI cycle and no task. Both give the same answers,
    metrics and logs."""

    def __init__(
        self,
        settings: Settings,
        verifiers: Mapping[str, Verifier],
        publisher: Publisher,
        serializer: EnvelopeSerializer,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources: dict[str, SourceSettings] = dict(settings.sources)
        self.verifiers = verifiers
        self.topics: TopicNames = names(settings)
        self._raw_topics = {n: self.topics.raw(s.provider) for n, s in self.sources.items()}
        self.publisher = publisher
        self.serializer = serializer
        self.metrics = metrics
        self.clock = clock
        self.max_in_flight = settings.gateway.max_in_flight
        self.body_timeout_s = settings.gateway.body_timeout_s
        self.body_deadlines = Deadlines(self.body_timeout_s)  # one timer for all body reads
        self.in_flight = 0
        self._verified: dict[tuple[str, str, str, str], Callable[[float], None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = header_map(scope["headers"])
        request_id = self.request_id(headers)
        source = self.sources.get(scope["path_params"]["source"])
        if source is None:
            status, _, body, extra = self.unknown_source()
            await self._send(send, status, body, extra, request_id)
            return
        self.in_flight += 1  # the in-flight gauge reads it (create_app)
        try:
            result = self.refuse(scope["method"], source, headers)
            if result is None:
                try:
                    raw = await self.body_deadlines.run(read_body(receive, source.body_limit))
                except _BodyTooLarge:
                    result = self.answer("too_large", CLOSE)
                except TimeoutError:
                    result = self.answer("too_slow", CLOSE)
                else:
                    step = self.accept(source, headers, raw, request_id)
                    if isinstance(step, Pending):
                        with contextlib.suppress(PublishError):  # settle() reads it
                            await step.future
                        result = self.settle(step)
                    else:
                        result = step
        except _ClientGone:
            return
        except Exception as exc:  # a bug: answer and count it; never publish, never crash
            result = self.failed(source, request_id, exc)
        finally:
            self.in_flight -= 1
        status, outcome, body, extra = result
        self.finish(source, outcome, started)
        await self._send(send, status, body, extra, request_id)

    @staticmethod
    def request_id(headers: Mapping[str, str]) -> str:
        """The caller's X-Request-Id if it is a sane one, else a new random id."""
        supplied = headers.get("x-request-id", "")
        if supplied and _REQUEST_ID.match(supplied):
            return supplied
        return f"{_random_bits(128):032x}"

    def unknown_source(self) -> Result:
        """Counted once, under "_unknown": a caller makes no label value."""
        self.metrics.unknown.inc()
        return self.answer("not_found")

    def refuse(
        self, method: str, source: SourceSettings, headers: Mapping[str, str]
    ) -> Result | None:
        """The answer before any body is read: a method other than POST, or a declared
        length over the source's limit. None: read the body."""
        if method != "POST":
            return self.answer("method_not_allowed", [(b"allow", b"POST")])
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > source.body_limit:
            return self.answer("too_large", CLOSE)
        return None

    def accept(
        self, source: SourceSettings, headers: Mapping[str, str], raw: bytes, request_id: str
    ) -> Result | Pending:
        """Verify, normalise, serialise and hand the envelope to the publisher: the answer
        when that ends early (refused, or not even queued), else the pending publish."""
        per_source = self.metrics.by_source[source.name]
        per_source.observe_body_size(len(raw))
        now = self.clock()
        try:
            verified = self.verifiers[source.name].verify(InboundRequest(headers, raw), now)
        except VerificationError as exc:
            # A plugin's own reason is logged, counted as "other" (labels stay bounded).
            reason = exc.reason if exc.reason in REASONS else "other"
            per_source.failures[reason].inc()
            logs.warning(
                "verification failed",
                source=source.name,
                reason=reason,
                detail=exc.detail if reason != "other" else f"{exc.reason}: {exc.detail}",
                request_id=request_id,
            )
            return self.answer("unauthorized", reason=reason)
        except Exception as exc:  # a verifier bug fails closed (the message may hold anything)
            per_source.failures["verifier_error"].inc()
            logs.error(
                "verifier raised",
                source=source.name,
                error=type(exc).__name__,
                request_id=request_id,
            )
            return self.answer("unauthorized", reason="verifier_error")
        self._count_verified(source.name, verified.scheme, verified.key_id, verified.mode)(1)
        if self.in_flight > self.max_in_flight:
            per_source.delivery_errors["queue_full"].inc()
            return self._unavailable()
        envelope = normalize(
            source,
            verified,
            received_at_us=int(now * 1_000_000),
            request_id=request_id,
            on_fallback=per_source.count_fallback,
        )
        quarantined = envelope.quarantine_reason is not None
        topic = self.topics.quarantine if quarantined else self._raw_topics[source.name]
        kafka_headers = ce_headers(envelope)
        if quarantined:
            kafka_headers += quarantine_headers(str(envelope.quarantine_reason), "gateway")
        value = self.serializer(envelope, topic)
        started = time.perf_counter()
        try:
            future = self.publisher.submit(
                topic, envelope.event_id.encode(), value, kafka_headers, source.deadline_s
            )
        except PublishError as exc:
            return self._publish_failed(source, envelope, request_id, started, exc)
        return Pending(source, envelope, topic, request_id, future, started)

    def settle(self, pending: Pending) -> Result:
        """The answer to a publish that is done: accepted (or quarantined) once
        acknowledged, else what the PublishError says."""
        source, envelope, request_id = pending.source, pending.envelope, pending.request_id
        exc = pending.future.exception()
        if exc is not None:
            if not isinstance(exc, PublishError):
                raise exc
            return self._publish_failed(source, envelope, request_id, pending.started, exc)
        per_source = self.metrics.by_source[source.name]
        per_source.observe_publish["acknowledged"](time.perf_counter() - pending.started)
        if logs.debug_enabled():  # one line per published request at log_level = "debug"
            logs.debug(
                "published",
                source=source.name,
                event_id=envelope.event_id,
                request_id=request_id,
                topic=pending.topic,
            )
        if envelope.quarantine_reason is not None:
            logs.warning(
                "quarantined",
                source=source.name,
                event_id=envelope.event_id,
                request_id=request_id,
                reason=envelope.quarantine_reason,
            )
            return (
                source.success_status,
                "quarantined",
                {
                    "status": "quarantined",
                    "event_id": envelope.event_id,
                    "reason": str(envelope.quarantine_reason),
                },
                [],
            )
        return (
            source.success_status,
            "accepted",
            {"status": "accepted", "event_id": envelope.event_id},
            [],
        )

    def _publish_failed(
        self,
        source: SourceSettings,
        envelope: Envelope,
        request_id: str,
        started: float,
        exc: PublishError,
    ) -> Result:
        per_source = self.metrics.by_source[source.name]
        per_source.observe_publish[exc.reason](time.perf_counter() - started)
        per_source.delivery_errors[exc.reason].inc()
        logs.warning(
            "publish failed",
            source=source.name,
            event_id=envelope.event_id,
            request_id=request_id,
            reason=exc.reason,
            detail=str(exc),
        )
        if exc.reason == "too_large":
            return self.answer("too_large_for_kafka")
        return self._unavailable()

    def failed(self, source: SourceSettings, request_id: str, exc: Exception) -> Result:
        """A bug on the way: logged (its type only) and answered 500; never a crash."""
        logs.error(
            "request failed",
            source=source.name,
            request_id=request_id,
            error=type(exc).__name__,
        )
        return self.answer("internal_error")

    def finish(self, source: SourceSettings, outcome: str, started: float) -> None:
        """Count the request's outcome and duration (every answered request of a known source)."""
        per_source = self.metrics.by_source[source.name]
        per_source.count_outcome[outcome](1)
        per_source.observe_request(time.perf_counter() - started)

    @staticmethod
    def render(
        status: int, body: dict[str, str], extra: list[tuple[bytes, bytes]], request_id: str
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The JSON payload and the response headers of an answer."""
        body["request_id"] = request_id
        payload = orjson.dumps(body)
        return payload, [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", request_id.encode()),
            *extra,
        ]

    @classmethod
    async def _send(
        cls,
        send: Send,
        status: int,
        body: dict[str, str],
        extra: list[tuple[bytes, bytes]],
        request_id: str,
    ) -> None:
        payload, response_headers = cls.render(status, body, extra, request_id)
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})

    def _count_verified(
        self, source: str, scheme: str, key_id: str | None, mode: str | None
    ) -> Callable[[float], None]:
        labels = (source, scheme, key_id or "", mode or NO_MODE)
        inc = self._verified.get(labels)
        if inc is None:  # bounded: configured sources x their keys x scheme modes
            # (pre-created from the config at start: a plugin may report more)
            inc = self._verified[labels] = adder(
                self.metrics.verified.labels(*labels), loop_only=True
            )
        return inc

    @staticmethod
    def answer(
        name: str, headers: list[tuple[bytes, bytes]] | None = None, **fields: str
    ) -> Result:
        answer = ANSWERS[name]
        return answer.status, answer.outcome, {**answer.body, **fields}, headers or []

    def _unavailable(self) -> Result:
        return self.answer("unavailable", [(b"retry-after", RETRY_AFTER_S.encode())])
