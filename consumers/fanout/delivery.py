"""One event through one sink: attempts, backoff, breaker, and the dead-letter queue.

Shared by the fan-out runner and `replay`. The sink only classifies one attempt
(`DeliveryResult`); this module turns attempts into an `Outcome`:

- ``ok``: delivered;
- ``rejected``: the sink refused it (e.g. HTTP 410): no retry;
- ``budget_exhausted``: retryable failures until `max_attempts` or `max_elapsed_s`;
- ``undecodable``: not an envelope (set by the runner, never reaches a sink).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumers.fanout.metrics import FanoutMetrics
from consumers.fanout.policy import Breaker, Budget, Slots, retry_delay_s
from consumers.sinks.base import DeliveryResult, Event, Sink, SinkError
from schemas import logs
from schemas.config import RetrySettings
from schemas.metrics_fast import Observer, adder
from schemas.records import KafkaHeaders, dlq_headers


@dataclass(frozen=True, slots=True)
class Outcome:
    reason: str  # "ok" | "rejected" | "budget_exhausted" | "undecodable"
    status: int | None = None
    attempts: int = 0
    detail: str = ""

    @property
    def delivered(self) -> bool:
        return self.reason == "ok"


@functools.lru_cache(maxsize=64)
def _delivered(status: int | None, attempts: int) -> Outcome:
    """The `ok` Outcome, one per (status, attempts): it is immutable, made per delivery."""
    return Outcome("ok", status, attempts)


class Deliverer:
    def __init__(
        self,
        sink: Sink,
        retry: RetrySettings,
        breaker: Breaker,
        concurrency: int,
        metrics: FanoutMetrics | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.sink = sink
        self.retry = retry
        self.breaker = breaker
        self.slots = Slots(concurrency)
        self.sleep = sleep
        name = sink.name
        # the children's fast entry points (schemas/metrics_fast.py): called per delivery
        self._retries = adder(metrics.retries.labels(name)) if metrics else None
        self._duration = Observer(metrics.duration.labels(name)).observe if metrics else None
        self._age = Observer(metrics.age.labels(name)).observe if metrics else None

    async def deliver(self, event: Event) -> Outcome:
        budget = Budget(self.retry)
        while True:
            result = await self._attempt(event)
            budget.attempts += 1
            if result.outcome == "ok":
                if self._age is not None:
                    self._age(max(0.0, time.time() - event.envelope.received_at / 1e6))
                return _delivered(result.status, budget.attempts)
            if result.outcome == "reject":
                return Outcome("rejected", result.status, budget.attempts, result.reason)
            delay = retry_delay_s(self.retry, budget.attempts, result.retry_after_s)
            if not budget.allows_another(delay):
                return Outcome("budget_exhausted", result.status, budget.attempts, result.reason)
            if self._retries is not None:
                self._retries(1)
            logs.debug(
                "retrying",
                sink=self.sink.name,
                event_id=event.event_id,
                attempt=budget.attempts,
                reason=result.reason,
                delay_s=round(delay, 3),
            )
            await self.sleep(delay)

    async def _attempt(self, event: Event) -> DeliveryResult:
        # Closed breaker (the usual case): no coroutine to create and await.
        probe = await self.breaker.acquire() if self.breaker.is_open else False
        recorded = False
        try:
            await self.slots.acquire()
            try:
                started = time.perf_counter()
                try:
                    result = await self.sink.deliver(event)
                except (SinkError, asyncio.CancelledError):
                    raise
                except Exception as exc:  # a sink's bug must not lose the event: retry it
                    logs.error(
                        "sink raised",
                        sink=self.sink.name,
                        event_id=event.event_id,
                        error=type(exc).__name__,
                    )
                    result = DeliveryResult.retry(f"sink raised {type(exc).__name__}")
                if self._duration is not None:
                    self._duration(time.perf_counter() - started)
            finally:
                self.slots.release()
            self.breaker.record(result.outcome != "retry", probe)
            recorded = True
            return result
        finally:
            if probe and not recorded:
                self.breaker.abandon_probe()


class DeadLetters:
    """Writes given-up events to ``<prefix>.dlq.<sink>``: same key and value, reason headers.

    A source record dead-lettered once is not written again by this process when a
    rewind delivers it again (a kafka sink's aborted transaction); after a restart it
    can be (the DLQ is at-least-once, like every delivery).
    """

    REMEMBERED = 10_000

    def __init__(self, producer_config: dict[str, Any], topic: str, sink: str) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.sink = sink
        self._producer = Producer(
            {
                **producer_config,
                **logs.kafka_client_config(f"dlq {sink}"),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        self._written: dict[tuple[str, int, int], None] = {}

    async def send(
        self,
        *,
        value: bytes,
        key: bytes | None,
        headers: KafkaHeaders,
        topic: str,
        partition: int,
        offset: int,
        outcome: Outcome,
    ) -> None:
        """Returns once the broker acknowledged; retries a failed produce until it succeeds."""
        source = (topic, partition, offset)
        if source in self._written:
            return
        written: list[tuple[str, str | bytes | None]] = [
            (k, v) for k, v in headers if k not in ("content-type",) and v is not None
        ]
        written += dlq_headers(
            reason=outcome.reason,
            last_status=outcome.status,
            attempts=outcome.attempts,
            sink=self.sink,
            detail=outcome.detail,
            origin=source,
        )
        written.append(("content-type", b"application/avro"))
        pause = 0.1
        while True:
            errors: list[Any] = []
            done = asyncio.Event()

            def on_delivery(
                err: Any, _msg: Any, errors: list[Any] = errors, done: asyncio.Event = done
            ) -> None:
                errors.append(err)
                done.set()

            try:
                self._producer.produce(
                    self.topic, value=value, key=key, headers=written, on_delivery=on_delivery
                )
            except BufferError:
                errors.append("queue full")
                done.set()
            while not done.is_set():
                self._producer.poll(0)
                if not done.is_set():
                    await asyncio.sleep(0.002)
            if errors[0] is None:
                if len(self._written) >= self.REMEMBERED:
                    del self._written[next(iter(self._written))]
                self._written[source] = None
                return
            logs.error("dlq produce failed", sink=self.sink, topic=self.topic, error=str(errors[0]))
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)
