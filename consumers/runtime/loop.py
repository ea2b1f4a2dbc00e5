"""The transactional consume-process-produce loop shared by the compactor and the reorderer.

The commit protocol, in one place. One transaction covers one batch: it ends
as soon as the input has nothing more ready (a poll of the client's fetch queue
returned less than it asked for), or at `max_batch` records, or after
`commit_interval_s`, whichever comes first. Under a backlog the fetch queue is
never empty, so batches grow to `max_batch` (throughput); at a steady rate each
batch is what arrived while the previous one was processed and committed
(latency: no record waits for a timer). Only with no transaction open does the
loop block, for the next record or until the logic's next due time
(`StageLogic.next_due`, for example the reorderer's next release deadline) or
the periodic tick, whichever comes first.

1. ``consume`` a chunk. Rebalance callbacks run only here, and a callback first
   commits any open transaction (steps 4-7), so revocation always falls between
   transactions and only drops that partition's state; assignment restores the
   partition's state from its changelog partition (`changelog.ChangelogReader`).
2. ``begin_transaction`` lazily, at the first record or the first tick output.
3. The stage logic processes each record and the wall-clock tick (which also
   runs with no input, so the reorderer releases a quiet partition); outputs
   and quarantined records are produced at once, changelog records are held.
4. ``flush``: every output is acknowledged before any changelog record is sent,
   so a broker that shows aborted records (the embedded one) can show an output
   without its changelog record (a duplicate later) but never a changelog record
   without its output (a loss).
5. Produce the held changelog records to the state partitions (co-partitioned
   with the input: same partition number).
6. ``send_offsets_to_transaction`` with the next position of every input
   partition touched, and the consumer group metadata.
7. ``commit_transaction``; then the logic applies the committed changes to its
   local store (`StageLogic.committed`).

On a transaction error: abort (or rebuild the producer if the error is fatal or
the producer was fenced), drop all in-memory state, restore it again from the
changelogs and rewind every assigned input partition to its committed offset.
On SIGTERM/SIGINT: finish and commit the open transaction, close the consumer
(leaving the group), exit 0.

A broker outage is waited out, however long: no step gives up for good. Each blocking
client call has a timeout (`LoopSettings.call_timeout_s`, half the producer's
``transaction.timeout.ms``); when one expires the transaction is aborted (or the
producer rebuilt) and recovery starts again, and ``init_transactions`` of a new
producer is retried until the broker answers. So the process stays up (liveness
keeps ticking), `consumers.runtime.watch` reports ``webhook_bridge_broker_reachable``
0 with a log line every interval, and the stage resumes from its committed offsets
and changelogs by itself. An outage only ever repeats this timeout-and-retry cycle,
so one that outlasts every timeout several times (the tests) behaves as a 10-minute
one does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from consumers.metrics import StageMetrics
from consumers.ops import Health
from consumers.runtime.changelog import ApplyFn, ChangelogReader, TopicPartitionKey
from schemas import logs
from schemas.errors import BridgeError
from schemas.records import quarantine_headers

TXN_TIMEOUT_S = 30.0  # half of librdkafka's default transaction.timeout.ms


def call_timeout_s(producer_config: dict[str, Any]) -> float:
    """Timeout of each blocking transactional call: half the transaction timeout, so an
    open transaction is given up (and aborted) before the coordinator would abort it."""
    timeout_ms = producer_config.get("transaction.timeout.ms")
    return TXN_TIMEOUT_S if timeout_ms is None else float(timeout_ms) / 2000.0


class StageError(BridgeError):
    """The stage cannot go on (for example its transactional producer cannot start)."""


class ProducerStuck(StageError):
    """A producer call outlived its own timeout; the producer is abandoned, not reused."""


def bounded_call(call: Callable[[], None], timeout_s: float, what: str) -> None:
    """`call()` on a helper thread; ProducerStuck if it has not returned after `timeout_s`.

    For send_offsets_to_transaction, which can block forever, past its timeout, after
    the group coordinator was unreachable (librdkafka issue 5456, still open in 2.16):
    the loop must not hang with it. The stuck thread is left behind with its producer.
    """
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name=what, daemon=True).start()
    if not done.wait(timeout_s):
        raise ProducerStuck(f"{what} did not return within {timeout_s:.0f}s")
    if failure:
        raise failure[0]


class Replay(Protocol):
    def __call__(
        self,
        starts: dict[TopicPartitionKey, int],
        apply: ApplyFn,
        on_stale: Callable[[str, int], None] | None = None,
    ) -> dict[TopicPartitionKey, int]: ...


class Output(Protocol):
    def emit(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        partition: int | None = None,
    ) -> None: ...

    def state(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None: ...


class StageLogic(Protocol):
    """What a stage plugs into the loop. Called from the loop's thread only."""

    def input_topics(self) -> list[str]: ...

    def provider_of(self, topic: str) -> str: ...

    def assign(
        self,
        partitions: list[TopicPartitionKey],
        committed: dict[TopicPartitionKey, int],
        replay: Replay,
    ) -> None:
        """Restore the state of newly assigned input partitions."""

    def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        """Forget in-memory state of revoked partitions (everything is committed)."""

    def reset(self) -> None:
        """Forget all in-memory state and uncommitted changes (before a re-restore)."""

    def process(self, msg: Any, out: Output) -> None: ...

    def tick(self, now: float, out: Output) -> None: ...

    def next_due(self) -> float | None:
        """Wall-clock time at which `tick` has work to do (None: only the periodic tick)."""

    def prepare_commit(self, out: Output) -> None:
        """Last chance to add changelog records to the open transaction."""

    def committed(self, state_offsets: dict[TopicPartitionKey, int]) -> None:
        """The transaction committed; `state_offsets`: last changelog offset written + 1."""

    def update_gauges(self, now: float) -> None: ...


@dataclass
class LoopSettings:
    stage: str
    group_id: str
    transactional_id: str
    instance_id: str
    consumer_config: dict[str, Any]
    producer_config: dict[str, Any]
    commit_interval_s: float = 0.1  # upper bound on a transaction's age
    max_batch: int = 5000
    tick_interval_s: float = 0.02  # periodic tick, and the longest blocking poll
    gauge_interval_s: float = 2.0
    call_timeout_s: float = TXN_TIMEOUT_S  # each blocking client call; init waits twice that


@dataclass
class _Txn:
    open: bool = False
    started: float = 0.0
    records: int = 0
    positions: dict[TopicPartitionKey, int] = field(default_factory=dict)
    state: list[tuple[str, int, bytes, bytes | None]] = field(default_factory=list)
    state_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)


class StageLoop:
    def __init__(
        self,
        settings: LoopSettings,
        logic: StageLogic,
        metrics: StageMetrics,
        health: Health,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.logic = logic
        self.metrics = metrics
        self.health = health
        self.clock = clock
        self._stop = False
        self._txn = _Txn()
        self._delivery_error: Any = None
        self._state_topics: set[str] = set()
        self._assigned: list[TopicPartitionKey] = []
        self._recover = False
        self._producer: Any = None
        self._producer_stuck = False  # a bounded_call gave up on it: never call it again
        self._consumer: Any = None
        self._reader = ChangelogReader(
            {
                **settings.consumer_config,
                "group.id": settings.group_id + ".restore",
                "enable.partition.eof": "false",
            },
            settings.instance_id,
            lambda: self._stop,
            health.tick,
            settings.call_timeout_s,
        )

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the loop to finish its transaction and leave (signal-handler safe)."""
        self._stop = True

    @property
    def stopping(self) -> bool:
        return self._stop

    def run(self) -> int:
        from confluent_kafka import Consumer

        try:
            self._producer = self._new_producer()
        except StageError:
            if self._stop:  # SIGTERM while waiting for the broker
                self._reader.close()
                logs.info("stage stopped", stage=self.s.stage)
                return 0
            raise
        self._consumer = Consumer(
            {
                **self.s.consumer_config,
                **logs.kafka_client_config("consumer"),
                "group.id": self.s.group_id,
            }
        )
        self._consumer.subscribe(
            self.logic.input_topics(),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        logs.info(
            "stage started",
            stage=self.s.stage,
            group=self.s.group_id,
            transactional_id=self.s.transactional_id,
            topics=",".join(self.logic.input_topics()),
        )
        next_tick = next_gauges = 0.0
        try:
            while not self._stop:
                if self._recover:
                    self.health.tick()  # recovering (perhaps waiting for the broker) is alive
                    self._recover_all()
                    continue
                room = max(1, self.s.max_batch - self._txn.records)
                try:
                    if self._txn.open:
                        wait = 0.0  # never hold an open transaction waiting for input
                    else:
                        due = self.logic.next_due()
                        wake = next_tick if due is None else min(next_tick, due)
                        wait = min(self.s.tick_interval_s, max(0.001, wake - self.clock()))
                    msgs = self._poll(room, wait)
                    self.health.tick()
                    if msgs:
                        self._process(msgs)
                    now = self.clock()
                    due = self.logic.next_due()
                    if now >= next_tick or (due is not None and now >= due):
                        next_tick = now + self.s.tick_interval_s
                        self.logic.tick(now, self._output)
                    if self._txn.open and (
                        len(msgs) < room  # the input has nothing more ready
                        or self._txn.records >= self.s.max_batch
                        or time.monotonic() - self._txn.started >= self.s.commit_interval_s
                    ):
                        self._commit()
                    if now >= next_gauges:
                        next_gauges = now + self.s.gauge_interval_s
                        self._update_gauges(now)
                except Exception as exc:
                    if self.stopping and isinstance(exc, BridgeError):
                        break
                    self._on_error(exc)
            if self._txn.open and not self._recover:
                self._commit()
        except StageError:
            if not self._stop:
                raise
            # Asked to stop while waiting for the broker: the open transaction (if any)
            # is aborted by the coordinator; its input is reprocessed after a restart.
        finally:
            self.health.ready = False
            self._close()
        logs.info("stage stopped", stage=self.s.stage)
        return 0

    # ------------------------------------------------------------------ the protocol

    @property
    def _output(self) -> _LoopOutput:
        return _LoopOutput(self)

    def _begin(self) -> None:
        if not self._txn.open:
            self._producer.begin_transaction()
            self._txn = _Txn(open=True, started=time.monotonic())

    def _poll(self, room: int, wait: float) -> list[Any]:
        """Up to `room` records already fetched; with `wait` > 0, first block up to
        `wait` seconds for one. (`consume(n, t)` itself would wait the whole `t`
        unless `n` records came, delaying every record at low rates.)"""
        if wait <= 0:
            return list(self._consumer.consume(room, 0))
        first = self._consumer.poll(wait)
        if first is None:
            return []
        if room == 1:
            return [first]
        return [first, *self._consumer.consume(room - 1, 0)]

    def _process(self, msgs: list[Any]) -> None:
        out = self._output
        consumed: dict[str, int] = {}
        for msg in msgs:
            if msg.error() is not None:
                continue  # partition EOF or a transient fetch error; librdkafka retries
            self._begin()
            where = (msg.topic(), msg.partition())
            self.logic.process(msg, out)
            self._txn.positions[where] = msg.offset() + 1
            self._txn.records += 1
            consumed[where[0]] = consumed.get(where[0], 0) + 1
        for topic, n in consumed.items():
            self.metrics.consumed.labels(self.s.stage, self.logic.provider_of(topic)).inc(n)

    def _commit(self) -> None:
        from confluent_kafka import TopicPartition

        self.logic.prepare_commit(self._output)  # last changelog records of the batch
        txn, producer = self._txn, self._producer
        committing = time.monotonic()
        # Step 4: outputs acknowledged before any changelog record leaves.
        self._flush()
        # Step 5: changelog records, co-partitioned with the input.
        for topic, partition, key, value in txn.state:
            self._produce(topic, key, value, None, partition)
        # Step 6: input positions, in the transaction.
        if txn.positions:
            offsets = [TopicPartition(t, p, o) for (t, p), o in txn.positions.items()]
            metadata = self._consumer.consumer_group_metadata()
            try:
                bounded_call(
                    lambda: producer.send_offsets_to_transaction(
                        offsets, metadata, self.s.call_timeout_s
                    ),
                    self.s.call_timeout_s * 2,
                    "send_offsets_to_transaction",
                )
            except ProducerStuck:
                self._producer_stuck = True
                raise
        self._flush()  # changelog acks: their offsets become the local checkpoints
        # Step 7: commit.
        producer.commit_transaction(self.s.call_timeout_s)
        done = time.monotonic()
        self.metrics.transaction_duration.labels(self.s.stage).observe(done - txn.started)
        self.metrics.commit_duration.labels(self.s.stage).observe(done - committing)
        self._txn = _Txn()
        self.logic.committed(txn.state_offsets)

    def _flush(self) -> None:
        remaining = self._producer.flush(self.s.call_timeout_s)
        if remaining:
            raise StageError(
                f"{remaining} records not acknowledged within {self.s.call_timeout_s}s"
            )
        if self._delivery_error is not None:
            err, self._delivery_error = self._delivery_error, None
            raise StageError(f"delivery failed: {err}")

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        partition: int | None,
    ) -> None:
        kwargs: dict[str, Any] = {"key": key, "value": value}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_error = err
            return
        topic = msg.topic()
        if topic in self._state_topics:
            where = (topic, msg.partition())
            offset = msg.offset() + 1
            if offset > self._txn.state_offsets.get(where, 0):
                self._txn.state_offsets[where] = offset

    # ------------------------------------------------------------------ rebalance

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.metrics.rebalances.labels(self.s.stage).inc()
        tps = [(tp.topic, tp.partition) for tp in partitions]
        logs.info("partitions assigned", stage=self.s.stage, partitions=_fmt(tps))
        try:
            if self._txn.open:
                self._commit()
            self._assigned = sorted(set(self._assigned) | set(tps))
            self._restore(tps)
            self.health.ready = True
        except Exception as exc:
            if self._stop:
                return  # RestoreInterrupted: shutting down
            logs.error(
                "restore on assignment failed; will recover",
                stage=self.s.stage,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._recover = True

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        logs.info("partitions revoked", stage=self.s.stage, partitions=_fmt(tps))
        try:
            if self._txn.open and not self._recover:
                self._commit()
        except Exception as exc:
            logs.error(
                "commit on revocation failed",
                stage=self.s.stage,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._abort()
            self._recover = True
        self.logic.revoke(tps)
        self._assigned = [tp for tp in self._assigned if tp not in set(tps)]
        if not self._assigned:
            self.health.ready = False

    def _restore(self, tps: list[TopicPartitionKey]) -> None:
        from confluent_kafka import TopicPartition

        committed: dict[TopicPartitionKey, int] = {}
        if tps:
            for tp in self._consumer.committed(
                [TopicPartition(t, p) for t, p in tps], timeout=self.s.call_timeout_s
            ):
                committed[(tp.topic, tp.partition)] = tp.offset

        def replay(
            starts: dict[TopicPartitionKey, int],
            apply: ApplyFn,
            on_stale: Callable[[str, int], None] | None = None,
        ) -> dict[TopicPartitionKey, int]:
            self._state_topics.update(t for t, _ in starts)
            return self._reader.replay(self._producer, starts, apply, on_stale)

        self.logic.assign(tps, committed, replay)

    # ------------------------------------------------------------------ failures

    def _on_error(self, exc: Exception) -> None:
        from confluent_kafka import KafkaException

        err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        logs.error(
            "transaction failed; aborting and rewinding",
            stage=self.s.stage,
            error=f"{type(exc).__name__}: {exc}",
            fatal=bool(err is not None and err.fatal()),
        )
        if err is not None and err.fatal():
            self._rebuild_producer()
        else:
            self._abort()
        self._recover = True

    def _abort(self) -> None:
        if self._producer_stuck:
            self._rebuild_producer()
            return
        if not self._txn.open:
            return
        self.metrics.aborted.labels(self.s.stage).inc()
        self._txn = _Txn()
        self._delivery_error = None
        try:
            self._producer.abort_transaction(self.s.call_timeout_s)
        except Exception as exc:
            logs.error(
                "abort failed; rebuilding the producer",
                stage=self.s.stage,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._rebuild_producer()

    def _rebuild_producer(self) -> None:
        if self._txn.open:
            self.metrics.aborted.labels(self.s.stage).inc()
        self._txn = _Txn()
        self._delivery_error = None
        old, self._producer = self._producer, None
        if old is not None and not self._producer_stuck:
            old.purge()
        elif old is not None:
            # A call is still running inside it: use it no more, not even to abort; the
            # new producer's init_transactions fences it and aborts its transaction.
            logs.warning("abandoning a stuck producer", stage=self.s.stage)
        self._producer_stuck = False
        self._producer = self._new_producer()

    def _recover_all(self) -> None:
        """Drop in-memory state, restore every assigned partition, rewind to committed."""
        from confluent_kafka import OFFSET_STORED, TopicPartition

        self._abort()
        self.logic.reset()
        try:
            self._restore(list(self._assigned))
            self._consumer.assign([TopicPartition(t, p, OFFSET_STORED) for t, p in self._assigned])
            self._recover = False
            self.health.ready = bool(self._assigned)
        except Exception as exc:
            if self._stop:
                return
            logs.error(
                "recovery failed; retrying",
                stage=self.s.stage,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._rebuild_producer()
            time.sleep(1.0)

    def _new_producer(self) -> Any:
        """A producer with transactions initialised; waits for the broker without a bound
        (a new producer only after a fatal error). StageError only when asked to stop."""
        from confluent_kafka import KafkaException, Producer

        waiting_since = time.monotonic()
        attempts = 0
        producer: Any = None
        while True:
            if producer is None:
                producer = Producer(
                    {
                        **self.s.producer_config,
                        **logs.kafka_client_config("producer"),
                        "transactional.id": self.s.transactional_id,
                        "on_delivery": self._on_delivery,
                    }
                )
            try:
                # Also fences a zombie with our id and aborts its open transaction.
                producer.init_transactions(self.s.call_timeout_s * 2)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                attempts += 1
                self.health.tick()
                if self._stop:
                    raise StageError(
                        f"stopped before transactions were initialised as "
                        f"{self.s.transactional_id}: {exc}"
                    ) from exc
                logs.warning(
                    "cannot initialise transactions yet; waiting for the broker",
                    stage=self.s.stage,
                    transactional_id=self.s.transactional_id,
                    attempts=attempts,
                    waited_s=round(time.monotonic() - waiting_since, 1),
                    error=str(err if err is not None else exc),
                )
                if err is not None and err.fatal():
                    producer = None  # a fatal error poisons this producer: start over
                elif err is not None and not err.retriable():
                    time.sleep(1.0)  # answered at once (not a timeout): do not spin
                continue
            if attempts:
                logs.info(
                    "transactions initialised after waiting",
                    stage=self.s.stage,
                    waited_s=round(time.monotonic() - waiting_since, 1),
                )
            return producer

    def _update_gauges(self, now: float) -> None:
        # The lag gauge is set by consumers.runtime.watch, off this loop.
        self.logic.update_gauges(now)

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group: partitions move at once
            except Exception as exc:
                logs.warning("consumer close failed", error=f"{type(exc).__name__}: {exc}")
        if self._producer is not None:
            self._producer.flush(5.0)
        self._reader.close()


class _LoopOutput:
    """The `Output` handed to the logic: begins the transaction lazily."""

    __slots__ = ("_loop",)

    def __init__(self, loop: StageLoop) -> None:
        self._loop = loop

    def emit(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        partition: int | None = None,
    ) -> None:
        self._loop._begin()
        self._loop._produce(topic, key, value, headers, partition)

    def state(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        self._loop._begin()
        self._loop._txn.state.append((topic, partition, key, value))


def quarantine(out: Output, topic: str, stage: str, msg: Any, reason: str) -> None:
    """Send an unusable record to the quarantine topic, in the open transaction."""
    headers = list(msg.headers() or [])
    headers += quarantine_headers(reason, stage, (msg.topic(), msg.partition(), msg.offset()))
    out.emit(topic, msg.key(), msg.value(), headers)


def _fmt(tps: list[TopicPartitionKey]) -> str:
    return ",".join(f"{t}[{p}]" for t, p in tps)
