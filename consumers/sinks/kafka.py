"""``type = "kafka"``: produce each event to an internal topic, in a transaction with offsets.

Options (``[sinks.<name>]``):

- ``topic`` (``"internal.{provider}.{event_type}"``): topic name template; fields
  ``{provider}``, ``{event_type}``, ``{source}``, ``{sink}``. The result is
  sanitised to Kafka's legal characters (``[a-zA-Z0-9._-]``, others become ``_``,
  at most 249 characters). Topics are created by the broker on first produce
  (``auto.create.topics.enable``) or beforehand by the operator.
- ``value`` (``"envelope"``): ``envelope`` = the Avro envelope bytes unchanged,
  ``body`` = the provider's original payload.
- ``transactional_id`` (``"<prefix>.fanout.<sink>.<instance_id>"``).

Records keep the ordering key and the ce_* headers.

Delivery: `deliver` returns once the broker answered for that record (its delivery
report). A record the destination refuses for good (too large, unknown topic,
not authorised, invalid) is a ``reject``, so it goes to the DLQ; any other error
is a ``retry``. Waiting for the broker bounds a sink to about ``concurrency``
records per round trip (``linger.ms`` 5 plus the broker's answer): raise
``concurrency`` for more throughput.

A refusal the broker sends back in a delivery report (its log would not append
the batch: a topic's ``max.message.bytes``, a policy) fails every record of the
produce batch, not only the culprit, so such a record is not dead-lettered on
that report: it is retried, and marked *suspect*. A suspect record is produced
alone (after every report in flight is in, with no other record beside it), and
only a refusal of it alone sends it to the DLQ; the innocent records of the
batch are written.

Transaction: the records and the consumer's offsets are committed in one Kafka
transaction every commit interval. librdkafka refuses to commit a transaction in
which any record failed, and a commit can fail by itself (coordinator, timeout):
`commit_offsets` then aborts the transaction and raises `TransactionAborted` (a
``KafkaException``), and the runner rewinds this sink's consumer to the group's
committed offsets, so everything since is delivered again. A record the
destination refused in an aborted transaction is remembered (by its source
offset) and refused again without being produced, so it cannot fail the next
transaction too. Only a fatal producer error (e.g. another producer took over
the ``transactional.id``) raises a plain `SinkError`, which stops the process.

What this guarantees is at-least-once, not exactly-once. Nothing is lost: an
offset is committed only in the transaction that carries its record's output (or
a later one), or after its DLQ record was acknowledged. Duplicates do happen:

- the runner commits the offsets of the contiguous finished prefix, while the
  transaction also carries records past it (other keys finish out of order);
  after a crash, a rebalance (lanes of revoked partitions are cancelled) or a
  rewind, those are produced again although their first copy is committed;
- the records of an aborted transaction are produced again: ``read_committed``
  readers on Apache Kafka see them once, other readers (and every reader of the
  embedded broker, which shows aborted records) see both copies;
- a record refused in an aborted transaction can reach the DLQ twice.

Readers deduplicate on the ``ce_id`` header (the event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import string
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from consumers.runtime.loop import ProducerStuck, bounded_call
from consumers.sinks.base import DeliveryResult, Event, Sink, SinkContext, SinkError
from schemas import logs
from schemas.config import SinkSettings
from schemas.options import Options

DEFAULT_TEMPLATE = "internal.{provider}.{event_type}"
TEMPLATE_FIELDS = ("provider", "event_type", "source", "sink")
MAX_TOPIC_CHARS = 249
_ILLEGAL = re.compile(r"[^a-zA-Z0-9._-]")
POLL_S = 0.001  # how often delivery reports are served while a deliver() waits for one
MAX_REFUSED = 10_000  # refused records remembered for a rewind (source coordinates)

# librdkafka codes for "the destination will not take this record as it is".
_REFUSED_NAMES = (
    "MSG_SIZE_TOO_LARGE",
    "RECORD_LIST_TOO_LARGE",
    "INVALID_MSG_SIZE",
    "INVALID_MSG",
    "INVALID_RECORD",
    "INVALID_TIMESTAMP",
    "UNSUPPORTED_FOR_MESSAGE_FORMAT",
    "POLICY_VIOLATION",
    "TOPIC_EXCEPTION",
    "TOPIC_AUTHORIZATION_FAILED",
    "UNKNOWN_TOPIC_OR_PART",
    "_UNKNOWN_TOPIC",
    "_UNKNOWN_PARTITION",
    "_INVALID_ARG",
    "_BAD_MSG",
)


# Of those, the ones about a record's content: the broker refuses the whole batch the
# record came in (every record of it gets the error), so the culprit is not known.
_CONTENT_REFUSED_NAMES = (
    "MSG_SIZE_TOO_LARGE",
    "RECORD_LIST_TOO_LARGE",
    "INVALID_MSG_SIZE",
    "INVALID_MSG",
    "INVALID_RECORD",
    "INVALID_TIMESTAMP",
    "_BAD_MSG",
)


class TransactionAborted(SinkError, KafkaException):
    """The transaction failed and was aborted: what it held must be delivered again.

    A ``KafkaException`` for the fan-out runner, which rewinds; a `SinkError` for a
    caller that cannot redo (``replay``), which stops with this message.
    """

    def __init__(self, message: str, error: Any) -> None:
        super().__init__(message)
        self.error = error  # the KafkaError that failed the transaction


def sanitise_topic(name: str) -> str:
    """A legal Kafka topic name: illegal characters become ``_``; never ``.``/``..``."""
    cleaned = _ILLEGAL.sub("_", name)[:MAX_TOPIC_CHARS]
    if cleaned in ("", ".", ".."):
        cleaned = cleaned.replace(".", "_") or "_"
    return cleaned


def render_topic(template: str, *, provider: str, event_type: str, source: str, sink: str) -> str:
    return sanitise_topic(
        template.format(provider=provider, event_type=event_type, source=source, sink=sink)
    )


class KafkaSink(Sink):
    OPTIONS = ("topic", "value", "transactional_id")
    commits_offsets = True

    def __init__(self, settings: SinkSettings, context: SinkContext) -> None:
        super().__init__(settings, context)
        self.template, self.value_mode = _parse(self.options)
        s = context.settings
        txn_id = self.options.opt_text("transactional_id") or (
            f"{s.bridge.topic_prefix}.fanout.{self.name}.{s.fanout.instance_id}"
        )
        self._config = {
            **s.producer_config(),
            "transactional.id": txn_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
        # Each transactional call waits at most half the transaction timeout (librdkafka's
        # default 60 s): a broker that is away costs a retry, never a stuck loop.
        self._call_s = float(self._config.get("transaction.timeout.ms", 60_000)) / 2000
        self._refused_codes = frozenset(getattr(KafkaError, n) for n in _REFUSED_NAMES)
        self._content_codes = frozenset(getattr(KafkaError, n) for n in _CONTENT_REFUSED_NAMES)
        self._producer = self._new_producer()
        self._in_txn = False
        self._transactions = 0  # transactions ended (committed or aborted) so far
        self._topics: dict[tuple[str, str, str], str] = {}
        self._waiting: set[asyncio.Future[Any]] = set()  # deliveries awaiting their report
        self._poller: asyncio.Task[None] | None = None
        self._refused: dict[tuple[str, int, int], str] = {}  # source record -> reason
        # refused by the broker inside a batch: produced alone from now on
        self._suspect: dict[tuple[str, int, int], None] = {}
        self._alone = asyncio.Lock()  # held while a suspect record is produced alone
        self._others_may_produce = asyncio.Event()
        self._others_may_produce.set()

    def _new_producer(self) -> Any:
        """A producer whose transactions are initialised: while Kafka is away this waits,
        with a log line per attempt, however long it takes (a fan-out rides out an
        outage); only a fatal error (another producer took the transactional.id) stops."""
        producer = Producer({**self._config, **logs.kafka_client_config(f"sink {self.name}")})
        waited = 0.0
        while True:
            try:
                producer.init_transactions(self._call_s)
                return producer
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal():
                    raise SinkError(
                        f"sink {self.name}: cannot initialise transactions: {error.str()}"
                    ) from None
                waited += self._call_s
                logs.warning(
                    "sink waiting for Kafka to initialise its transactions",
                    sink=self.name,
                    waited_s=round(waited),
                    error=error.str(),
                )
                time.sleep(1.0)

    @classmethod
    def validate(cls, settings: SinkSettings, env: Mapping[str, str]) -> None:
        _parse(cls.options_for(settings))

    def topic_for(self, event: Event) -> str:
        env = event.envelope
        cache_key = (env.provider, env.event_type, env.source)
        topic = self._topics.get(cache_key)
        if topic is None:
            topic = render_topic(
                self.template,
                provider=env.provider,
                event_type=env.event_type,
                source=env.source,
                sink=self.name,
            )
            if len(self._topics) < 10_000:
                self._topics[cache_key] = topic
        return topic

    async def deliver(self, event: Event) -> DeliveryResult:
        source = (event.topic, event.partition, event.offset)
        refused = self._refused.get(source)
        if refused is not None:  # refused before its transaction was aborted: not again
            return DeliveryResult.reject(refused)
        if source not in self._suspect:
            await self._others_may_produce.wait()
            return await self._produce(event, source, alone=False)
        async with self._alone:
            self._others_may_produce.clear()
            try:
                while self._waiting:  # every record in flight reported: the batch is ours
                    await asyncio.sleep(POLL_S)
                return await self._produce(event, source, alone=True)
            finally:
                self._others_may_produce.set()

    async def _produce(
        self, event: Event, source: tuple[str, int, int], alone: bool
    ) -> DeliveryResult:
        value = event.value if self.value_mode == "envelope" else event.envelope.body
        headers: list[tuple[str, str | bytes | None]] = list(event.headers)
        report: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        while True:
            try:
                if not self._in_txn:
                    self._producer.begin_transaction()
                    self._in_txn = True
                self._producer.produce(
                    self.topic_for(event),
                    value=value,
                    key=event.key,
                    headers=headers,
                    on_delivery=partial(self._on_report, report, source, alone),
                )
                break
            except BufferError:  # local queue full: let librdkafka send, then go on
                self._producer.poll(0)
                await asyncio.sleep(0.005)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._STATE or not self._in_txn:
                    return self._result(exc.args[0])  # refused before it was queued
                # The open transaction failed (another record's report): nothing can be
                # produced in it. Wait for its abort, which rewinds and cancels this call,
                # rather than spend a retry on it.
                ended = self._transactions
                while self._transactions == ended:
                    await asyncio.sleep(0.01)
        if alone:
            self._producer.flush(0)  # send it now, in a batch of its own
        self._waiting.add(report)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._serve_reports())
        try:
            error = await report
        finally:
            self._waiting.discard(report)
        if error is None:
            self._suspect.pop(source, None)
            return DeliveryResult.ok()
        if error.code() in self._content_codes and not alone:
            # The broker refused the batch this record was in: perhaps for another record.
            return DeliveryResult.retry(f"kafka {error.name()} (batch refused): {error.str()}")
        return self._result(error)

    def _result(self, error: Any) -> DeliveryResult:
        reason = f"kafka {error.name()}: {error.str()}"
        if error.code() in self._refused_codes:
            return DeliveryResult.reject(reason)
        return DeliveryResult.retry(reason)

    def _on_report(
        self,
        report: asyncio.Future[Any],
        source: tuple[str, int, int],
        alone: bool,
        error: Any,
        _msg: Any,
    ) -> None:
        """librdkafka's delivery callback, served by `poll` (or a flush) on the loop's thread."""
        if error is not None and error.code() in self._refused_codes:
            # This failed report dooms the transaction, and the runner then delivers the
            # record again: remember it here (its deliver() may be cancelled by then).
            if error.code() in self._content_codes and not alone:
                _remember(self._suspect, source, None)
            else:
                _remember(self._refused, source, self._result(error).reason)
        if not report.done():  # a cancelled deliver() left it behind
            report.set_result(error)

    async def _serve_reports(self) -> None:
        """Serve delivery reports while any deliver() waits for one."""
        while self._waiting:
            self._producer.poll(0)
            if self._waiting:
                await asyncio.sleep(POLL_S)

    def commit_offsets(self, offsets: list[Any], group_metadata: Any) -> None:
        """Commit the transaction with `offsets`; on failure abort it: `TransactionAborted`.

        The caller must then deliver again everything after the committed offsets.
        """
        if not offsets and not self._in_txn:
            return
        try:
            if not self._in_txn:
                self._producer.begin_transaction()
                self._in_txn = True
            if offsets:
                producer = self._producer
                # can block forever after a coordinator outage (librdkafka 5456): bounded
                bounded_call(
                    lambda: producer.send_offsets_to_transaction(
                        offsets, group_metadata, self._call_s
                    ),
                    2 * self._call_s,
                    "send_offsets_to_transaction",
                )
            self._producer.commit_transaction(self._call_s)
            self._in_txn = False
            self._transactions += 1
        except KafkaException as exc:
            error = exc.args[0]
            self._abort(error)
            raise TransactionAborted(
                f"sink {self.name}: transaction aborted: {error.str()}", error
            ) from None
        except ProducerStuck as exc:  # abandoned: a new producer fences it and its txn
            logs.warning("replacing a stuck producer", sink=self.name, error=str(exc))
            self._replace_producer()
            error = KafkaError(KafkaError._TIMED_OUT, str(exc))
            raise TransactionAborted(f"sink {self.name}: {exc}", error) from None

    def _abort(self, error: Any) -> None:
        """Drop the open transaction after `error`; SinkError if the producer is done for."""
        if error.fatal():
            raise SinkError(f"sink {self.name}: transaction failed: {error.str()}") from None
        try:
            if self._in_txn:
                self._producer.abort_transaction(self._call_s)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise SinkError(
                    f"sink {self.name}: transaction abort failed: {exc.args[0].str()}"
                ) from None
            # Not abortable in its state (e.g. a commit that timed out can only be
            # retried): a new producer with the same transactional.id aborts it.
            logs.warning("replacing the producer", sink=self.name, error=exc.args[0].str())
            self._replace_producer()
        self._in_txn = False
        self._transactions += 1

    def _replace_producer(self) -> None:
        """A new producer with the same transactional.id: it aborts the old one's open
        transaction and fences the old producer."""
        producer = self._new_producer()
        for report in self._waiting:  # the old producer will not report them
            if not report.done():
                report.set_result(KafkaError(KafkaError._PURGE_QUEUE))
        self._producer = producer
        self._in_txn = False
        self._transactions += 1

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._in_txn:
            # Closing anyway: whatever this transaction held is redelivered after restart.
            with contextlib.suppress(Exception):
                self._producer.abort_transaction(10)
        self._producer.flush(10)


def _remember(
    table: dict[tuple[str, int, int], Any], source: tuple[str, int, int], value: Any
) -> None:
    if source not in table and len(table) >= MAX_REFUSED:
        del table[next(iter(table))]
    table[source] = value


def _parse(opts: Options) -> tuple[str, str]:
    template = opts.text("topic", DEFAULT_TEMPLATE)
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise opts.fail("topic", f"not a valid template ({exc})") from None
    unknown = sorted(fields - set(TEMPLATE_FIELDS))
    if unknown or "" in fields:
        raise opts.fail(
            "topic",
            f"unknown field {{{unknown[0] if unknown else ''}}}; valid: "
            + ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS),
        )
    return template, opts.choice("value", "envelope", ("envelope", "body"))
