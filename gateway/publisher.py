"""Publish envelopes and await the broker's acknowledgement from asyncio.

One idempotent producer (acks=all) per gateway process. A poller thread serves
librdkafka's delivery reports and hands them to the event loop in batches (one
wake-up per poll, not one per message). A request awaits its own report up to
its source's deadline: a 2xx is only ever sent after the broker acknowledged.

A fatal producer error (for example UNKNOWN_PRODUCER_ID after the broker lost its
state) fails the messages in flight and replaces the producer; later requests
use the new one, without a process restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from gateway import logs
from gateway.errors import BridgeError

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 2,
    "compression.type": "lz4",
    "message.timeout.ms": 30_000,  # librdkafka's own retry budget; requests stop waiting sooner
    "queue.buffering.max.messages": 100_000,
    "socket.keepalive.enable": True,
    "log_level": 3,
}


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

    def __init__(self, config: Mapping[str, Any], poll_interval_s: float = 0.05) -> None:
        self._config = {**PRODUCER_DEFAULTS, **config}
        self._poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._done: deque[tuple[asyncio.Future[None], str | None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rebuild_requested = threading.Event()
        self.rebuilds = 0
        self.last_ok = 0.0  # monotonic time of the last proof the broker answers
        self._producer: Any = None
        self._generation = 0
        self._pending: dict[int, set[asyncio.Future[None]]] = {}
        self._timeouts_in_a_row = 0
        self.on_rebuild: list[Any] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._producer = self._new_producer()
        self._thread = threading.Thread(target=self._poll_forever, name="kafka-poll", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush what is queued (up to timeout_s), stop the poller. Returns messages left."""
        left = 0
        if self._producer is not None:
            left = int(self._producer.flush(timeout_s))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drain_ready()
        return left

    def _new_producer(self) -> Any:
        from confluent_kafka import Producer

        self._generation += 1
        generation = self._generation
        self._pending[generation] = set()

        def on_error(err: Any) -> None:
            if err.fatal():
                logs.error("producer fatal error, rebuilding", code=err.name())
                self._rebuild_requested.set()

        return Producer({**self._config, "error_cb": on_error})

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
        done = self._done

        def on_delivery(err: Any, _msg: Any) -> None:
            # librdkafka thread: only queue; the loop is woken once per poll batch.
            done.append((future, None if err is None else str(err.name())))

        with self._lock:
            producer, generation = self._producer, self._generation
            try:
                producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                )
            except BufferError:
                raise PublishError("queue_full", "producer queue is full") from None
            except Exception as exc:  # KafkaException on a dead producer
                raise PublishError("broker", type(exc).__name__) from None
            self._pending[generation].add(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=deadline_s)
        except TimeoutError:
            self._timeouts_in_a_row += 1
            if (
                self._timeouts_in_a_row >= self.STUCK_TIMEOUTS
                and time.monotonic() - self.last_ok > self.STUCK_AFTER_S
            ):
                self._timeouts_in_a_row = 0
                self._rebuild_requested.set()
            raise PublishError("timeout", f"no acknowledgement within {deadline_s}s") from None
        finally:
            self._pending.get(generation, set()).discard(future)

    # ------------------------------------------------------------------ poller
    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            try:
                producer.poll(self._poll_interval_s)
            except Exception as exc:  # never let the poller die
                logs.error("producer poll failed", error=type(exc).__name__)
                time.sleep(self._poll_interval_s)
            if self._done:
                self._wake()
            if self._rebuild_requested.is_set():
                self._rebuild()

    def _wake(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                self._loop.call_soon_threadsafe(self._drain_ready)

    def _drain_ready(self) -> None:
        done = self._done
        now = time.monotonic()
        while done:
            future, error = done.popleft()
            if error is None:
                self.last_ok = now
                self._timeouts_in_a_row = 0
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(PublishError("broker", error))
                if error in ("_FATAL", "UNKNOWN_PRODUCER_ID", "OUT_OF_ORDER_SEQUENCE_NUMBER"):
                    self._rebuild_requested.set()

    def _rebuild(self) -> None:
        """Replace a producer that hit a fatal error; fail what it still held."""
        self._rebuild_requested.clear()
        with self._lock:
            old, old_generation = self._producer, self._generation
            self._producer = self._new_producer()
            self.rebuilds += 1
            stranded = self._pending.pop(old_generation, set())
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fail, stranded)
        try:
            old.purge()
            old.flush(0)
        except Exception as exc:
            logs.warning("could not purge the old producer", error=type(exc).__name__)
        for callback in self.on_rebuild:
            callback()

    @staticmethod
    def _fail(futures: set[asyncio.Future[None]]) -> None:
        for future in futures:
            if not future.done():
                future.set_exception(PublishError("fatal", "producer rebuilt after fatal error"))

    def check_broker(self, timeout_s: float = 2.0) -> bool:
        """A metadata round trip (from the readiness probe's thread, not the loop)."""
        try:
            self._producer.list_topics(timeout=timeout_s)
        except Exception:
            return False
        self.last_ok = time.monotonic()
        return True
