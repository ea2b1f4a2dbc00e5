"""The kafka sink when the destination refuses a record or a transaction fails (real broker).

A record the destination refuses for good must reach the sink's DLQ and delivery
must go on, for that sink and for the others in the process; a failed transaction
is aborted and redelivered from the committed offsets, never a crash.

Refusals come three ways: by the client (its own ``message.max.bytes``), by the
broker's metadata (an unknown topic; clients here never ask for auto-creation),
and by the broker's write path inside a transaction (a topic whose
``max.message.bytes`` is smaller than the record: Apache Kafka only, the embedded
broker has no size limit). Output is counted per event id, read_committed, so a
duplicate is a number, not hidden in a set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from consumers.fanout.runner import group_id
from consumers.sinks import DeliveryResult, Event, SinkContext, build_sink
from consumers.sinks.kafka import KafkaSink, TransactionAborted
from deploy.topics import ensure_topics
from schemas import config
from schemas.config import Settings
from schemas.envelope import Envelope
from schemas.records import ce_headers
from schemas.serde import EnvelopeSerializer
from schemas.topics import TopicSpec, implied_topics, names
from tests.conftest import KafkaCluster, OwnBroker
from tests.receiver_support import (
    SECRET,
    SECRET_ENV,
    FanoutThread,
    ScriptedReceiver,
    consume_all,
    envelope,
    produce,
    raw_config,
    wait_for,
)

pytestmark = pytest.mark.kafka

NO_AUTO_CREATE = {
    "allow.auto.create.topics": "false",
    "topic.metadata.propagation.max.ms": "1000",  # an unknown topic fails after 1 s, not 30
}
FAST_RETRY = {"max_attempts": 3, "initial_backoff_s": 0.05, "max_backoff_s": 0.2}


def settings_with(
    bootstrap: str,
    prefix: str,
    sinks: dict[str, dict[str, object]],
    producer: dict[str, str] | None = None,
) -> Settings:
    raw: dict[str, Any] = raw_config(bootstrap, prefix, sinks)
    raw["kafka"]["producer"] = dict(producer or {})
    return config.parse(raw, {SECRET_ENV: SECRET})


def event(env: Envelope, offset: int, topic: str = "src") -> Event:
    return Event(
        envelope=env,
        value=EnvelopeSerializer()(env, topic),
        key=env.ordering_key.encode(),
        headers=ce_headers(env),
        topic=topic,
        partition=0,
        offset=offset,
    )


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    r = ScriptedReceiver(SECRET).start()
    yield r
    r.stop()


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """Messages of the bridge's warning logs during the test."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("webhook_bridge")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def ids_in(bootstrap: str, topic: str, want: set[str], timeout_s: float = 30.0) -> Counter[str]:
    """How often each event id (ce_id) is in `topic` (read_committed), read from the start
    until every id of `want` was seen and then 1 s of silence."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "kse-reader"})
    try:
        meta = reader.list_topics(topic, timeout=10).topics[topic]
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        seen: Counter[str] = Counter()
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while not (set(seen) >= want and time.monotonic() - quiet_since > 1.0):
            if time.monotonic() >= deadline:
                missing = sorted(want - set(seen))
                raise AssertionError(f"{topic}: {len(missing)} missing, e.g. {missing[:10]}")
            for m in reader.consume(100, 0.2):
                event_id = dict(m.headers() or ()).get("ce_id") if m.error() is None else None
                if isinstance(event_id, bytes):
                    seen[event_id.decode()] += 1
                    quiet_since = time.monotonic()
        return seen
    finally:
        reader.close()


def committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offset: int = reader.committed([tp], 10)[0].offset
        return offset
    finally:
        reader.close()


# ------------------------------------------------------------------ the sink alone


def test_record_over_message_max_bytes_is_rejected_at_once(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("kse")
    out = f"out-{prefix}"
    # The config refuses a message.max.bytes below the largest envelope its sources can
    # make (schemas.sizes): a source limited to 1,000 bytes needs about 57 kB.
    raw: dict[str, Any] = raw_config(
        kafka.bootstrap, prefix, {"k": {"type": "kafka", "topic": out}}
    )
    raw["kafka"]["producer"] = {"message.max.bytes": "60000"}
    for source in raw["sources"].values():
        source["body_limit"] = 1000
    settings = config.parse(raw, {SECRET_ENV: SECRET})
    ensure_topics(settings.admin_config(), [TopicSpec(out, 1, 1)])
    big = replace(envelope("big", "K"), body=b'{"pad": "' + b"x" * 100_000 + b'"}')

    async def go() -> list[DeliveryResult]:
        sink = build_sink(settings.sinks["k"], SinkContext(settings, {}))
        try:
            results = [
                await sink.deliver(event(big, 0)),
                await sink.deliver(event(envelope("small", "K"), 1)),
            ]
            sink.commit_offsets([], None)  # the refusal did not spoil the transaction
            return results
        finally:
            await sink.close()

    refused, ok = asyncio.run(go())
    assert (refused.outcome, ok.outcome) == ("reject", "ok")
    assert "MSG_SIZE_TOO_LARGE" in refused.reason
    written = consume_all(kafka.bootstrap, out, 1)
    assert [dict(m.headers())["ce_id"] for m in written] == [b"small"]


def test_unknown_topic_aborts_the_transaction_and_is_refused_again_without_producing(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("kse")
    settings = settings_with(
        kafka.bootstrap,
        prefix,
        {"k": {"type": "kafka", "topic": f"out-{prefix}.{{event_type}}"}},
        NO_AUTO_CREATE,
    )
    ensure_topics(settings.admin_config(), [TopicSpec(f"out-{prefix}.thing.updated", 1, 1)])
    good = envelope("g1", "K")
    bad = envelope("x1", "K", event_type="missing")

    async def go() -> None:
        sink = build_sink(settings.sinks["k"], SinkContext(settings, {}))
        assert isinstance(sink, KafkaSink)
        try:
            assert (await sink.deliver(event(good, 0))).outcome == "ok"
            # The deliver() of the bad record is cancelled before its report arrives (as a
            # rewind does); the commit serves the report and cannot commit.
            pending = asyncio.create_task(sink.deliver(event(bad, 1)))
            await asyncio.sleep(0.05)
            pending.cancel()
            with pytest.raises(TransactionAborted) as failed:
                sink.commit_offsets([], None)
            assert isinstance(failed.value, KafkaException)  # the runner's cue to rewind
            assert failed.value.error.code() == KafkaError._INCONSISTENT
            # Redelivered after the abort: refused with the broker's reason, not produced
            # (a new produce would fail with librdkafka's local _UNKNOWN_TOPIC instead).
            again = await sink.deliver(event(bad, 1))
            assert again.outcome == "reject" and "kafka UNKNOWN_TOPIC_OR_PART" in again.reason
            other = await sink.deliver(event(envelope("x2", "K", event_type="missing"), 2))
            assert other.outcome == "reject" and "kafka _UNKNOWN_TOPIC" in other.reason
            assert (await sink.deliver(event(good, 0))).outcome == "ok"
            sink.commit_offsets([], None)
        finally:
            await sink.close()

    asyncio.run(asyncio.wait_for(go(), 20))


# ------------------------------------------------------------------ in the fan-out


def test_unknown_topic_goes_to_the_dlq_and_every_sink_goes_on(
    kafka: KafkaCluster,
    unique_name: Callable[[str], str],
    receiver: ScriptedReceiver,
    warnings: list[str],
) -> None:
    prefix = unique_name("kse")
    settings = settings_with(
        kafka.bootstrap,
        prefix,
        {
            "out": {"type": "kafka", "topic": f"out-{prefix}.{{event_type}}", "retry": FAST_RETRY},
            "hook": {
                "type": "http",
                "url": receiver.url(),
                "secret": SECRET_ENV,
                "timeout_s": 1.0,
                "retry": FAST_RETRY,
            },
        },
        NO_AUTO_CREATE,
    )
    out_topic = f"out-{prefix}.thing.updated"
    ensure_topics(settings.admin_config(), [*implied_topics(settings), TopicSpec(out_topic, 3, 1)])
    ordered = names(settings).ordered("acme")
    first = [envelope(f"a{i}", f"K{i % 4}", seq=i) for i in range(10)]
    first += [envelope("x1", "K1", event_type="missing.type")]
    first += [envelope(f"b{i}", f"K{i % 4}", seq=i) for i in range(10)]
    produce(kafka.bootstrap, ordered, first)
    good_first = {e.event_id for e in first} - {"x1"}

    with FanoutThread(settings) as fan:
        dlq = consume_all(kafka.bootstrap, names(settings).dlq("out"), 1, timeout_s=30)
        headers = dict(dlq[0].headers())
        assert headers["ce_id"] == b"x1"
        assert headers["x-dlq-reason"] == b"rejected"
        assert b"UNKNOWN_TOPIC" in headers["x-dlq-detail"]
        # The refusal stopped neither sink: a later batch goes through both.
        second = [envelope(f"c{i}", f"K{i % 4}", seq=i) for i in range(10)]
        produce(kafka.bootstrap, ordered, second)
        want = good_first | {e.event_id for e in second}
        receiver.wait_for(
            lambda: {d.event_id for d in receiver.succeeded()} == want | {"x1"},
            timeout_s=30,
            what="the http sink's deliveries",
        )
        written = ids_in(kafka.bootstrap, out_topic, want)
        # No redelivery loop: the group's offset moved past the refused record. (Not "past
        # every record": the embedded broker drops the offsets of a transaction that holds
        # no record, as the last one may be.)
        at = TopicPartition(ordered, int(headers["x-dlq-partition"]))
        wait_for(
            lambda: (
                committed(kafka.bootstrap, group_id(settings, "out"), at)
                > int(headers["x-dlq-offset"])
            ),
            timeout_s=30,
            what="the kafka sink to commit past the refused record",
        )
        assert fan.error is None, "the fan-out kept running"
    assert set(written) >= want
    duplicates = sum(n - 1 for n in written.values())
    # A rewind writes again what committed transactions held past the committed offsets
    # (other keys' lanes run ahead of a stuck one): never the whole input a second time.
    bound = len(want) - 1
    print(f"\nunknown topic: {len(written)} ids written, {duplicates} duplicates (<= {bound})")
    assert duplicates <= bound
    assert "transaction aborted; redelivering from the committed offsets" in warnings
    dead = consume_all(kafka.bootstrap, names(settings).dlq("out"), 1)
    assert {dict(m.headers())["ce_id"] for m in dead} == {b"x1"}
    assert record_count(kafka.bootstrap, names(settings).dlq("hook")) == 0


def record_count(bootstrap: str, topic: str) -> int:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "kse-count"})
    try:
        meta = reader.list_topics(topic, timeout=10).topics[topic]
        marks = [
            reader.get_watermark_offsets(TopicPartition(topic, p), 10) for p in meta.partitions
        ]
        return sum(high - low for low, high in marks)
    finally:
        reader.close()


class AbortFirstCommit(KafkaSink):
    """A kafka sink whose first commit past a finished record fails (e.g. timed out).

    It counts the records it wrote before that failure: the rewind can write those a
    second time (when a committed transaction held them past the committed offsets),
    never anything else."""

    failed = False
    delivered_before_failure = 0  # the only records the rewind can write a second time

    async def deliver(self, event: Event) -> DeliveryResult:
        result = await super().deliver(event)
        if result.outcome == "ok" and not AbortFirstCommit.failed:
            AbortFirstCommit.delivered_before_failure += 1
        return result

    def commit_offsets(self, offsets: list[Any], group_metadata: Any) -> None:
        # The topics are new: an offset > 0 is one past at least one finished record.
        if not AbortFirstCommit.failed and any(tp.offset > 0 for tp in offsets):
            AbortFirstCommit.failed = True
            error = KafkaError(KafkaError._TIMED_OUT, "injected commit failure")
            self._abort(error)
            raise TransactionAborted("injected", error)
        super().commit_offsets(offsets, group_metadata)


def test_failed_commit_rewinds_and_redelivers_what_the_transaction_held(
    kafka: KafkaCluster, unique_name: Callable[[str], str], warnings: list[str]
) -> None:
    prefix = unique_name("kse")
    out_topic = f"out-{prefix}"
    settings = settings_with(
        kafka.bootstrap,
        prefix,
        {"out": {"type": "tests.test_kafka_sink_errors:AbortFirstCommit", "topic": out_topic}},
    )
    ensure_topics(settings.admin_config(), [*implied_topics(settings), TopicSpec(out_topic, 3, 1)])
    ordered = names(settings).ordered("acme")
    events = [envelope(f"e{i}", f"K{i % 5}", seq=i) for i in range(20)]
    produce(kafka.bootstrap, ordered, events)

    with FanoutThread(settings) as fan:
        written = ids_in(kafka.bootstrap, out_topic, {e.event_id for e in events})
        # The failed commit was the first past a finished record, so the rewind went back
        # before that record and delivers it again.
        wait_for(
            lambda: (
                fan.metric("webhook_bridge_fanout_delivered_total", sink="out", provider="acme")
                > len(events)
            ),
            timeout_s=30,
            what="a redelivery after the failed commit",
        )
    assert "transaction aborted; redelivering from the committed offsets" in warnings
    assert set(written) == {e.event_id for e in events}
    duplicates = sum(n - 1 for n in written.values())
    bound = AbortFirstCommit.delivered_before_failure
    print(f"\nfailed commit: {len(written)} ids written, {duplicates} duplicates (<= {bound})")
    # Only what a committed transaction held past the committed offsets is written twice;
    # what the aborted one held is hidden from read_committed readers.
    assert duplicates <= bound


@pytest.mark.real_kafka
def test_a_write_the_broker_refuses_inside_a_transaction_goes_to_the_dlq_and_the_rest_on(
    kafka: KafkaCluster, unique_name: Callable[[str], str], warnings: list[str]
) -> None:
    """The client accepts the record; the broker's log refuses it (the topic's
    max.message.bytes): the transaction cannot commit, is aborted and redelivered, the
    record goes to the DLQ, and every other record is written."""
    prefix = unique_name("kse")
    out_topic = f"out-{prefix}"
    settings = settings_with(
        kafka.bootstrap,
        prefix,
        {"out": {"type": "kafka", "topic": out_topic, "retry": FAST_RETRY}},
    )
    ensure_topics(
        settings.admin_config(),
        [*implied_topics(settings), TopicSpec(out_topic, 3, 1, {"max.message.bytes": "20000"})],
    )
    ordered = names(settings).ordered("acme")
    big = replace(envelope("big", "K2", seq=10), body=b'{"pad": "' + b"x" * 50_000 + b'"}')
    events = [envelope(f"a{i}", f"K{i % 4}", seq=i) for i in range(10)]
    events += [big, *(envelope(f"b{i}", f"K{i % 4}", seq=20 + i) for i in range(10))]
    produce(kafka.bootstrap, ordered, events)
    want = {e.event_id for e in events} - {"big"}

    with FanoutThread(settings) as fan:
        dlq = consume_all(kafka.bootstrap, names(settings).dlq("out"), 1, timeout_s=30)
        headers = dict(dlq[0].headers())
        assert headers["ce_id"] == b"big", {k: v for k, v in headers.items() if k.startswith("x-")}
        assert headers["x-dlq-reason"] == b"rejected"
        assert b"MSG_SIZE_TOO_LARGE" in headers["x-dlq-detail"], headers["x-dlq-detail"]
        written = ids_in(kafka.bootstrap, out_topic, want)
        wait_for(
            lambda: all(
                committed(kafka.bootstrap, group_id(settings, "out"), TopicPartition(ordered, p))
                == end_offset(kafka.bootstrap, ordered, p)
                for p in range(3)
            ),
            timeout_s=30,
            what="the kafka sink to commit every record",
        )
        assert fan.error is None, "the fan-out kept running"
    assert "transaction aborted; redelivering from the committed offsets" in warnings
    assert set(written) == want, "every other record was written"
    duplicates = sum(n - 1 for n in written.values())
    dead_records = consume_all(kafka.bootstrap, names(settings).dlq("out"), 1)
    dead = Counter(dict(m.headers())["ce_id"] for m in dead_records)
    details = {dict(m.headers())["ce_id"]: dict(m.headers())["x-dlq-detail"] for m in dead_records}
    bound = len(want) - 1  # as above: never the whole input a second time
    print(
        f"\nbroker refusal: {len(written)} ids written, {duplicates} duplicates (<= {bound}), "
        f"DLQ {dead}"
    )
    assert set(dead) == {b"big"}, details
    assert dead[b"big"] == 1  # dead-lettered once, however often a rewind redelivers it
    assert duplicates <= bound


def end_offset(bootstrap: str, topic: str, partition: int) -> int:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "kse-end"})
    try:
        return int(reader.get_watermark_offsets(TopicPartition(topic, partition), 10)[1])
    finally:
        reader.close()


@pytest.mark.slow
def test_a_broker_outage_spends_no_retry_budget(
    fresh_broker: OwnBroker, unique_name: Callable[[str], str], warnings: list[str]
) -> None:
    """The kafka sink writes to the bridge's own cluster. When that cluster is away, no
    event is at fault: a budget of two attempts and 5 s must not send the events in
    flight at a kill -9 to the DLQ. Every event reaches the sink's topic after the
    restart, and the DLQ stays empty."""
    if not fresh_broker.keeps_data:
        pytest.fail("this test needs Apache Kafka (the embedded broker forgets everything)")
    prefix = unique_name("kso")
    out_topic = f"out-{prefix}"
    tight = {"max_attempts": 2, "initial_backoff_s": 0.1, "max_backoff_s": 0.5}
    settings = settings_with(
        fresh_broker.bootstrap,
        prefix,
        {
            "out": {
                "type": "kafka",
                "topic": out_topic,
                "concurrency": 64,
                "retry": {**tight, "max_elapsed_s": 5.0},
            }
        },
        {"transaction.timeout.ms": "10000"},
    )
    ensure_topics(settings.admin_config(), [*implied_topics(settings), TopicSpec(out_topic, 3, 1)])
    ordered = names(settings).ordered("acme")
    events = [envelope(f"e{i}", f"K{i % 50}", seq=i) for i in range(20_000)]
    want = {e.event_id for e in events}
    with FanoutThread(settings) as fan:
        produce(fresh_broker.bootstrap, ordered, events[:100])
        ids_in(fresh_broker.bootstrap, out_topic, {e.event_id for e in events[:100]})
        produce(fresh_broker.bootstrap, ordered, events[100:])
        wait_for(
            lambda: (
                fan.metric("webhook_bridge_fanout_delivered_total", sink="out", provider="acme")
                > 200
            ),
            timeout_s=30,
            what="the sink to be working through the backlog",
        )
        fresh_broker.kill()  # with most of the backlog fetched or still to fetch
        time.sleep(30)  # three transaction timeouts, six budgets' worth of elapsed time
        fresh_broker.restart()
        written = ids_in(fresh_broker.bootstrap, out_topic, want, timeout_s=180)
        assert fan.error is None, "the fan-out kept running"
        dead = {
            reason: fan.metric(
                "webhook_bridge_fanout_dead_lettered_total", sink="out", reason=reason
            )
            for reason in ("rejected", "budget_exhausted")
        }
    assert set(written) == want
    assert dead == {"rejected": 0, "budget_exhausted": 0}, dead
    dlq = names(settings).dlq("out")
    assert record_count(fresh_broker.bootstrap, dlq) == 0, "an outage sent events to the DLQ"
    duplicates = sum(written.values()) - len(written)
    print(f"\nbroker outage: {len(written)} ids written, {duplicates} duplicates")
