"""Publish envelopes and await the broker's acknowledgement from asyncio.

One idempotent producer (acks=all) per gateway process. The event loop itself
serves librdkafka's delivery reports: a timer calls ``producer.poll(0)`` every
millisecond while messages are in flight (every 50 ms when idle), so reports
resolve their request's future on the loop thread. An earlier design used a
poller thread; on one core the two threads fought over the GIL and the gateway
spent most of its time handing it back and forth (docs/benchmarks.md).

Requests do not call ``produce`` one by one: each adds its message to an outbox,
and the outbox is produced in one burst at the end of the event-loop iteration
(``call_soon``). librdkafka wakes its broker thread (a syscall and a context
switch) when a message lands in an empty partition queue; producing a burst
pays that once per iteration instead of once per request, at no added latency.

A request waits for its own report up to its source's deadline: a 2xx is only
ever sent after the broker acknowledged. A fatal producer error (for example
UNKNOWN_PRODUCER_ID after the broker lost its state), or a run of timeouts with
no acknowledgement at all, replaces the producer and fails what it still held;
later requests use the new one, without a process restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway import logs
from gateway.errors import BridgeError

_KAFKA_LOGGER = logging.getLogger("webhook_bridge.kafka")  # librdkafka logs, structured
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 1,
    "message.timeout.ms": 30_000,  # librdkafka's own retry budget; requests stop waiting sooner
    "queue.buffering.max.messages": 100_000,
    "socket.keepalive.enable": True,
    "log_level": 3,
}
BUSY_POLL_S = 0.001
IDLE_POLL_S = 0.05
FATAL_DELIVERY_ERRORS = frozenset({"_FATAL", "UNKNOWN_PRODUCER_ID", "OUT_OF_ORDER_SEQUENCE_NUMBER"})


class PublishError(BridgeError):
    """No acknowledgement: `reason` is one of timeout, queue_full, broker, fatal."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Publisher:
    # A broker that lost its state can also make the producer time out every message
    # instead of raising a fatal error: after this many timeouts in a row with no
    # acknowledgement for `STUCK_AFTER_S`, the producer is rebuilt as well.
    STUCK_TIMEOUTS = 3
    STUCK_AFTER_S = 10.0

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = {**PRODUCER_DEFAULTS, **config}
        self._max_queued = int(self._config["queue.buffering.max.messages"])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._producer: Any = None
        self._pending: set[asyncio.Future[None]] = set()  # futures of the current producer
        self._outbox: list[
            tuple[str, bytes, bytes, list[tuple[str, bytes]], asyncio.Future[None]]
        ] = []
        self._rebuild_requested = False
        self._timeouts_in_a_row = 0
        self.rebuilds = 0
        self.last_ok = 0.0  # monotonic time of the last proof the broker answers
        self.on_rebuild: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._producer = self._new_producer()
        self._schedule(IDLE_POLL_S)

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush what is queued (up to timeout_s) on the loop thread. Returns messages left."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._producer is None:
            return 0
        return int(self._producer.flush(timeout_s))

    def _new_producer(self) -> Any:
        from confluent_kafka import Producer

        def on_error(err: Any) -> None:  # runs inside poll(), on the loop thread
            if err.fatal():
                logs.error("producer fatal error, rebuilding", code=err.name())
                self._rebuild_requested = True

        return Producer({**self._config, "error_cb": on_error, "logger": _KAFKA_LOGGER})

    # ------------------------------------------------------------------ publishing
    def queue_depth(self) -> int:
        return len(self._producer) if self._producer is not None else 0

    async def publish(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        deadline_s: float,
    ) -> None:
        """Produce and wait for the acknowledgement; raise PublishError otherwise."""
        loop = self._loop
        assert loop is not None, "publisher not started"
        future: asyncio.Future[None] = loop.create_future()

        if len(self._outbox) + self.queue_depth() >= self._max_queued:
            raise PublishError("queue_full", "producer queue is full")
        if not self._outbox:
            loop.call_soon(self._produce_outbox)
        self._outbox.append((topic, key, value, headers, future))
        timeout = loop.call_later(deadline_s, _expire, future, deadline_s)
        try:
            await future
        except PublishError as exc:
            if exc.reason == "timeout":
                self._note_timeout()
            raise
        finally:
            timeout.cancel()

    def _produce_outbox(self) -> None:
        """Produce every queued message in one burst, then serve ready reports."""
        outbox, self._outbox = self._outbox, []
        producer, pending = self._producer, self._pending
        for topic, key, value, headers, future in outbox:
            if future.done():  # expired while queued
                continue
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,
                    on_delivery=self._reporter(future, pending),
                )
            except BufferError:
                future.set_exception(PublishError("queue_full", "producer queue is full"))
                continue
            except Exception as exc:  # KafkaException from a producer in a fatal state
                self._rebuild_requested = True
                future.set_exception(PublishError("broker", type(exc).__name__))
                continue
            pending.add(future)
        producer.poll(0)
        if self._timer is not None and self._timer.when() - self._loop_time() > BUSY_POLL_S:
            self._timer.cancel()
            self._schedule(BUSY_POLL_S)

    def _reporter(
        self, future: asyncio.Future[None], pending: set[asyncio.Future[None]]
    ) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, _msg: Any) -> None:  # inside poll(), on the loop thread
            pending.discard(future)
            if future.done():
                return
            if err is None:
                self.last_ok = time.monotonic()
                self._timeouts_in_a_row = 0
                future.set_result(None)
            else:
                name = str(err.name())
                if name in FATAL_DELIVERY_ERRORS:
                    self._rebuild_requested = True
                future.set_exception(PublishError("broker", name))

        return on_delivery

    def _loop_time(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _note_timeout(self) -> None:
        self._timeouts_in_a_row += 1
        if (
            self._timeouts_in_a_row >= self.STUCK_TIMEOUTS
            and time.monotonic() - self.last_ok > self.STUCK_AFTER_S
        ):
            self._timeouts_in_a_row = 0
            self._rebuild_requested = True

    # ------------------------------------------------------------------ polling
    def _schedule(self, delay: float) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        try:
            self._producer.poll(0)
        except Exception as exc:  # never let the poll timer die
            logs.error("producer poll failed", error=type(exc).__name__)
        if self._rebuild_requested:
            self._rebuild()
        busy = bool(self._pending) or len(self._producer) > 0
        self._schedule(BUSY_POLL_S if busy else IDLE_POLL_S)

    def _rebuild(self) -> None:
        """Replace a producer that hit a fatal error; fail what it still held."""
        self._rebuild_requested = False
        old, stranded = self._producer, self._pending
        self._producer, self._pending = self._new_producer(), set()
        self.rebuilds += 1
        for future in stranded:
            if not future.done():
                future.set_exception(PublishError("fatal", "producer rebuilt after fatal error"))
        try:
            old.purge()
            old.poll(0)
        except Exception as exc:
            logs.warning("could not purge the old producer", error=type(exc).__name__)
        for callback in self.on_rebuild:
            callback()

    def check_broker(self, timeout_s: float = 2.0) -> bool:
        """A metadata round trip; safe from another thread (serves no callbacks)."""
        try:
            self._producer.list_topics(timeout=timeout_s)
        except Exception:
            return False
        self.last_ok = time.monotonic()
        return True


def _expire(future: asyncio.Future[None], deadline_s: float) -> None:
    if not future.done():
        future.set_exception(PublishError("timeout", f"no acknowledgement within {deadline_s}s"))
