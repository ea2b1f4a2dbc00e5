"""Publish envelopes and await the broker's acknowledgement from asyncio.

One idempotent producer (acks=all) per gateway process. The event loop itself
serves librdkafka's delivery reports: a timer calls ``producer.poll(0)`` every
millisecond while messages are in flight (every 50 ms when idle), so reports resolve
their request's future on the loop thread. Under load (`gateway.busy_poll_in_flight`
messages or more in flight, default 16) it polls on every iteration of the loop
instead: a report no longer waits up to a millisecond (libuv's timers count whole
milliseconds) while the loop sits idle with every connection waiting for one. That
buys requests per second and latency with CPU spent polling (docs/benchmarks.md); a
lightly loaded gateway never polls that way. An earlier design used a poller thread;
on one core the two threads fought over the GIL and the gateway spent most of its time
handing it back and forth (docs/benchmarks.md).

Requests do not call ``produce`` one by one: each adds its message to an outbox,
and the outbox is produced in one burst at the end of the event-loop iteration
(``call_soon``). librdkafka wakes its broker thread (a syscall and a context
switch) when a message lands in an empty partition queue; producing a burst
pays that once per iteration instead of once per request, at no added latency.

A request waits for its own report up to its source's deadline: a 2xx is only
ever sent after the broker acknowledged. A failure says what happened (`REASONS`):
``timeout`` (the broker is reachable but did not acknowledge in time), ``broker``
(no broker reachable, or the broker refused), ``topic_missing``, ``queue_full``,
``fatal`` (the producer itself is in a fatal state), ``too_large`` (the client or the
topic refused the record's size: answered 413, that message's fault alone, never a
rebuild).

A broker that is merely away is waited for: librdkafka keeps the idempotent
producer's state and resumes once the broker is back (Apache Kafka keeps it across
a restart too). Only a fatal producer error (for example UNKNOWN_PRODUCER_ID after
the broker lost its state), or a run of timeouts over `STUCK_AFTER_S` with no
acknowledgement while the broker answered all along, replaces the producer and
fails what it still held; later requests use the new one, without a process
restart.

A background thread (`BrokerWatch`) asks the broker for one watched topic's
metadata every `PROBE_INTERVAL_S`, in turn: whether the broker answers
(`broker_reachable`, what /readyz reports) and which topics are missing (a
publish to one fails at once with ``topic_missing``; nothing auto-creates it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from schemas import logs
from schemas.errors import BridgeError

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "allow.auto.create.topics": False,  # topics are made by `webhook-bridge topics`, not here
    "acks": "all",
    "linger.ms": 1,
    "message.timeout.ms": 30_000,  # librdkafka's own retry budget; requests stop waiting sooner
    "queue.buffering.max.messages": 100_000,
    # A batch never exceeds 64 KiB once it holds a message, so any larger envelope
    # travels in a batch of its own: a topic that refuses it as too large refuses it
    # alone, never the small requests that would have shared its batch.
    "batch.size": 65_536,
    "socket.keepalive.enable": True,
    "log_level": 3,
}
BUSY_POLL_S = 0.001
IDLE_POLL_S = 0.05
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0  # a lost broker shows within interval + timeout (< 5 s)
REASONS = ("timeout", "broker", "topic_missing", "queue_full", "fatal", "too_large")
FATAL_DELIVERY_ERRORS = frozenset({"_FATAL", "UNKNOWN_PRODUCER_ID", "OUT_OF_ORDER_SEQUENCE_NUMBER"})
# The client (message.max.bytes) or the topic (max.message.bytes, segment.bytes) refuses
# the record's size: that message's fault alone, never a reason to rebuild the producer.
TOO_LARGE_ERRORS = frozenset({"MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE"})
TOPIC_ERRORS = frozenset({"UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION"})


def delivery_reason(name: str) -> str:
    """The `REASONS` value of a librdkafka error name in a delivery report or from produce()."""
    if name in FATAL_DELIVERY_ERRORS:
        return "fatal"
    if name in TOO_LARGE_ERRORS:
        return "too_large"
    if name in TOPIC_ERRORS:
        return "topic_missing"
    return "broker"


class PublishError(BridgeError):
    """No acknowledgement: `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Publisher:
    # A broker that lost its state can also make the producer time out every message
    # instead of raising a fatal error: after this many timeouts in a row, spread over
    # `STUCK_AFTER_S` with the broker reachable all along and no acknowledgement, the
    # producer is rebuilt as well. (Not "no ack for 10 s": an idle gateway has none.)
    STUCK_TIMEOUTS = 3
    STUCK_AFTER_S = 10.0

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[str] = (),
        busy_poll_in_flight: int = 16,
    ) -> None:
        self._config = {**PRODUCER_DEFAULTS, **config}
        # from this many in flight, poll on every loop iteration (0: never; module's doc)
        self._busy_poll_in_flight = busy_poll_in_flight or float("inf")
        self.topics = tuple(topics)  # what the watch checks for existence
        self._max_queued = int(self._config["queue.buffering.max.messages"])
        self._loop: asyncio.AbstractEventLoop | None = None
        # The poll tick's handle and when it is due (loop time). Not `TimerHandle.when()`:
        # uvloop answers call_later(0) with a plain Handle, which has no `when`.
        self._timer: asyncio.Handle | None = None
        self._timer_due = 0.0
        self._producer: Any = None
        self._pending: set[asyncio.Future[None]] = set()  # futures of the current producer
        self._outbox: list[
            tuple[str, bytes, bytes, list[tuple[str, bytes]], asyncio.Future[None]]
        ] = []
        # per deadline (a source's deadline_s): (when it is due, the request's future)
        self._deadlines: dict[float, deque[tuple[float, asyncio.Future[None]]]] = {}
        self._rebuild_requested = False
        self._timeouts_in_a_row = 0
        self._stuck_since: float | None = None  # first timeout of the current run
        self.clock: Callable[[], float] = time.monotonic
        self.rebuilds = 0
        self.last_ok = 0.0  # monotonic time of the last acknowledgement
        self.on_rebuild: list[Callable[[], None]] = []
        self.client_log = logs.KafkaClientLog("gateway-producer", on_error=self._on_client_error)
        self.broker_reachable = False
        self.reachable_since = 0.0  # monotonic; meaningful while broker_reachable
        self.missing_topics: frozenset[str] = frozenset()
        self._watch: BrokerWatch | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create the producer and start polling it and watching the broker."""
        self._loop = loop
        self._producer = self._new_producer()
        self._schedule(IDLE_POLL_S)
        self._watch = BrokerWatch(self)
        self._watch.start()

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush what is queued (up to timeout_s) on the loop thread. Returns messages left."""
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._producer is None:
            return 0
        return int(self._producer.flush(timeout_s))

    def _new_producer(self) -> Any:
        from confluent_kafka import Producer

        return Producer({**self._config, **self.client_log.config()})

    def _on_client_error(self, err: Any) -> None:  # runs inside poll(), on the loop thread
        if err.fatal():
            logs.error("producer fatal error, rebuilding", code=err.name())
            self._rebuild_requested = True
        elif err.name() == "_ALL_BROKERS_DOWN":  # sooner than the next probe can tell
            self.set_reachable(False)

    def set_reachable(self, reachable: bool) -> None:
        """Record what a probe or the client found; log a change once."""
        if reachable == self.broker_reachable:
            return
        if reachable:
            self.reachable_since = self.clock()
            logs.info("broker reachable", bootstrap=self._config.get("bootstrap.servers", ""))
        else:
            logs.warning("broker unreachable", bootstrap=self._config.get("bootstrap.servers", ""))
        self.broker_reachable = reachable

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
        await self.submit(topic, key, value, headers, deadline_s)

    def submit(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        deadline_s: float,
    ) -> asyncio.Future[None]:
        """Queue the message; the future resolves on its acknowledgement, or fails with a
        PublishError (at the latest at `deadline_s`). Raises PublishError when it cannot
        even be queued (topic missing, queue full)."""
        loop = self._loop
        assert loop is not None, "publisher not started"
        if topic in self.missing_topics:
            raise PublishError("topic_missing", topic)
        if len(self._outbox) + self.queue_depth() >= self._max_queued:
            raise PublishError("queue_full", "producer queue is full")
        future: asyncio.Future[None] = loop.create_future()
        if not self._outbox:
            loop.call_soon(self._produce_outbox)
        self._outbox.append((topic, key, value, headers, future))
        # No timer per request (a timer's start and cancel cost more than the rest of
        # publish()): the poll tick expires what is due, within BUSY_POLL_S of the deadline
        # (while anything is in flight the tick runs every BUSY_POLL_S).
        due = self._deadlines.get(deadline_s)
        if due is None:
            due = self._deadlines[deadline_s] = deque()
        due.append((loop.time() + deadline_s, future))
        return future

    def _expire_due(self, now: float) -> None:
        """Fail every future whose deadline has passed (each deque is in deadline order:
        one deadline per deque, appended as requests came)."""
        for deadline_s, due in self._deadlines.items():
            while due and due[0][0] <= now:
                _, future = due.popleft()
                if not future.done():
                    self._expire(future, deadline_s)

    def _expire(self, future: asyncio.Future[None], deadline_s: float) -> None:
        if future.done():
            return
        if not self.broker_reachable:  # not slow: away (the outage, not the deadline, is news)
            self._timeouts_in_a_row, self._stuck_since = 0, None
            future.set_exception(PublishError("broker", f"broker unreachable for {deadline_s}s"))
            return
        future.set_exception(PublishError("timeout", f"no acknowledgement within {deadline_s}s"))
        self._note_timeout()

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
            except Exception as exc:  # KafkaException: a fatal state, an unknown topic, ...
                err: Any = exc.args[0] if exc.args else None
                name = str(err.name()) if hasattr(err, "name") else type(exc).__name__
                reason = "fatal" if hasattr(err, "fatal") and err.fatal() else delivery_reason(name)
                if reason == "fatal":
                    self._rebuild_requested = True
                future.set_exception(PublishError(reason, name))
                continue
            pending.add(future)
        producer.poll(0)
        if self._timer is not None and self._timer_due - self._loop_time() > BUSY_POLL_S:
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
                self.last_ok = self.clock()
                self._timeouts_in_a_row, self._stuck_since = 0, None
                future.set_result(None)
            else:
                name = str(err.name())
                reason = delivery_reason(name)
                if reason == "fatal":
                    self._rebuild_requested = True
                future.set_exception(PublishError(reason, name))

        return on_delivery

    def _loop_time(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _note_timeout(self) -> None:
        """A timeout while the broker answers: a producer the broker no longer knows
        (it lost its state) may time out forever instead of failing fatally."""
        now = self.clock()
        if self._stuck_since is None or self.reachable_since > self._stuck_since:
            self._timeouts_in_a_row, self._stuck_since = 0, now  # a new run
        self._timeouts_in_a_row += 1
        if (
            self._timeouts_in_a_row >= self.STUCK_TIMEOUTS
            and self.broker_reachable
            and now - self._stuck_since >= self.STUCK_AFTER_S
        ):
            self._timeouts_in_a_row, self._stuck_since = 0, None
            logs.error("producer stuck while the broker answers, rebuilding")
            self._rebuild_requested = True

    # ------------------------------------------------------------------ polling
    def _schedule(self, delay: float) -> None:
        assert self._loop is not None
        self._timer_due = self._loop.time() + delay
        self._timer = self._loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        try:
            self._producer.poll(0)
        except Exception as exc:  # never let the poll timer die
            logs.error("producer poll failed", error=type(exc).__name__)
        self._expire_due(self._loop_time())
        if self._rebuild_requested:
            self._rebuild()
        in_flight = len(self._pending)
        if in_flight >= self._busy_poll_in_flight:  # under load: on the loop's next iteration
            self._schedule(0.0)
        else:
            busy = in_flight > 0 or len(self._producer) > 0
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

    def check_broker(self, timeout_s: float = 2.0, topics: Sequence[str] | None = None) -> bool:
        """Metadata round trips for `topics` (default: every watched topic, or the cluster
        when none is watched); records reachability and missing topics. Safe from another
        thread (serves no callbacks); blocks up to `timeout_s` per topic."""
        producer = self._producer
        asked = self.topics if topics is None else tuple(topics)
        missing = set(self.missing_topics)
        try:
            if not asked:
                producer.list_topics(timeout=timeout_s)
            for topic in asked:
                meta = producer.list_topics(topic, timeout=timeout_s).topics.get(topic)
                if meta is None or meta.error is not None:
                    missing.add(topic)
                else:
                    missing.discard(topic)
        except Exception:
            self.set_reachable(False)
            return False
        self.set_reachable(True)
        for topic in sorted(missing - self.missing_topics):
            logs.error("topic missing: publishes to it answer 503", topic=topic)
        for topic in sorted(self.missing_topics - missing):
            logs.info("topic present again", topic=topic)
        self.missing_topics = frozenset(missing)
        return True


class BrokerWatch:
    """A daemon thread: one topic's metadata every `PROBE_INTERVAL_S`, the watched topics in
    turn, so /readyz and the gauges answer from fresh state without blocking a request."""

    def __init__(self, publisher: Publisher, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.publisher = publisher
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=PROBE_TIMEOUT_S + 1)

    def _run(self) -> None:
        publisher, turn = self.publisher, 0
        while not self._stop.wait(self.interval_s):
            topics = publisher.topics
            one = [topics[turn % len(topics)]] if topics else []
            turn += 1
            try:
                publisher.check_broker(PROBE_TIMEOUT_S, one)
                publisher.client_log.flush()
            except Exception as exc:  # never let the watch die
                logs.error("broker watch failed", error=type(exc).__name__)
