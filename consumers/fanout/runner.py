"""One sink's consumer loop: read `.ordered`, route, deliver per key in order, commit.

Concurrency: every sink has its own consumer group (``<prefix>.fanout.<sink>``)
and its own `SinkRunner` task on the process's event loop, so a slow or broken
sink only ever holds back its own group's offsets.

Per-key order: records are queued into a *lane* per (partition, key); one task
drains a lane, one event at a time, so a later event of a key waits while an
earlier one is retried; other lanes go on. `concurrency` bounds attempts in
flight across lanes; `max_in_flight` bounds records read but unfinished: at the
bound the runner stops reading (librdkafka's prefetched records stay queued in
it); if the bound still holds after `PAUSE_AFTER_S`, the partitions are paused
and polling goes on, so the group keeps us. (Pausing at once cost a refetch of
everything prefetched at every brief full point: half the throughput.)

Commit protocol (the one place it is written down):

1. A record counts as finished once it was delivered, dead-lettered (broker
   acknowledged the DLQ record) or filtered out by routing.
2. Every `commit_interval_s` the runner commits, per partition, one past the
   contiguous prefix of finished offsets (`OffsetTracker`); transactional sinks
   commit those offsets inside their producer transaction instead. If that
   transaction fails, the sink aborts it (``KafkaException``) and the runner
   rewinds: the lanes and trackers of every assigned partition are dropped and
   the consumer seeks to the group's committed offsets, so everything the
   aborted transaction held is delivered again (at-least-once).
3. On revoke, the finished prefix is committed synchronously and the lanes of
   the revoked partitions are cancelled: their records are redelivered by the
   new owner (at-least-once; same webhook-id).
4. On stop: no more fetching; lanes get `drain_timeout_s` to finish; the rest is
   cancelled (not committed, so redelivered after restart); commit; close.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from consumers.fanout.delivery import DeadLetters, Deliverer, Outcome
from consumers.fanout.metrics import FanoutMetrics
from consumers.fanout.policy import Breaker, Route, RunnerOptions
from consumers.fanout.tracker import OffsetTracker, PartitionTracker
from consumers.ops import Health
from consumers.sinks.base import Event, Sink
from schemas import logs
from schemas.config import Settings, SinkSettings
from schemas.metrics_fast import adder
from schemas.records import LATE, LATE_VALUES, KafkaHeaders, source_of
from schemas.serde import EnvelopeDeserializer, SerdeError
from schemas.topics import names

PAUSE_AFTER_S = 1.0  # full that long: pause the partitions and keep polling


@dataclass(slots=True)
class _Item:
    value: bytes
    key: bytes | None
    headers: KafkaHeaders
    topic: str
    partition: int
    offset: int
    tracker: PartitionTracker
    event: Event | None  # None: undecodable


def group_id(settings: Settings, sink: str) -> str:
    return f"{settings.bridge.topic_prefix}.fanout.{sink}"


def source_topics(settings: Settings, sink: SinkSettings) -> dict[str, str]:
    """{`.ordered` topic: provider} for every configured provider the sink's globs take."""
    route = Route.of(sink)
    t = names(settings)
    return {t.ordered(p): p for p in settings.providers if route.wants_provider(p)}


class SinkRunner:
    def __init__(
        self,
        settings: Settings,
        sink_settings: SinkSettings,
        sink: Sink,
        metrics: FanoutMetrics,
        health: Health | None = None,
        commit_interval_s: float = 0.2,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.sink_settings = sink_settings
        self.sink = sink
        self.name = sink_settings.name
        self.options = RunnerOptions.from_settings(sink_settings)
        self.route = Route.of(sink_settings)
        self.topics = source_topics(settings, sink_settings)
        self.metrics = metrics
        self.health = health
        self.commit_interval_s = commit_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.assigned = False
        self.tracker = OffsetTracker()
        self.lanes: dict[tuple[str, int, bytes | None], deque[_Item]] = {}
        self.lane_tasks: dict[tuple[str, int, bytes | None], asyncio.Task[None]] = {}
        self._deserialize = EnvelopeDeserializer(settings.bridge.schema_registry_url)
        self._delivered = {  # by topic: one lookup per delivery (fast entry points)
            t: adder(metrics.delivered.labels(self.name, p)) for t, p in self.topics.items()
        }
        self._in_flight = metrics.in_flight.labels(self.name)
        self._consumer: Any = None
        self._dlq: DeadLetters | None = None
        self._deliverer: Deliverer | None = None
        self._paused = False
        self._full_since: float | None = None  # since when in_flight >= max_in_flight
        self._wanted: dict[tuple[str, str, str], bool] = {}  # Route.wants, memoised (fnmatch)
        self._rewinding: set[tuple[str, int]] = set()  # dropped, to seek to committed offsets

    # ------------------------------------------------------------------ main loop

    async def run(self, stop: asyncio.Event) -> None:
        from confluent_kafka import Consumer

        from consumers.runtime.process import CONSUMER_DEFAULTS

        if not self.topics:
            logs.warning("sink matches no configured provider; idle", sink=self.name)
            await stop.wait()
            return
        breaker_gauge = self.metrics.breaker_open.labels(self.name)
        breaker = Breaker(
            self.options.breaker_failures,
            self.options.breaker_cooldown_s,
            on_change=lambda is_open: self._breaker_changed(breaker_gauge, is_open),
        )
        self._deliverer = Deliverer(
            self.sink, self.sink_settings.retry, breaker, self.options.concurrency, self.metrics
        )
        self._dlq = DeadLetters(
            self.settings.producer_config(), names(self.settings).dlq(self.name), self.name
        )
        self._consumer = Consumer(
            {
                **CONSUMER_DEFAULTS,  # short session timeouts: a restart rejoins in seconds
                **self.settings.consumer_config(),
                **logs.kafka_client_config(f"sink {self.name}"),
                "group.id": group_id(self.settings, self.name),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        self._consumer.subscribe(
            list(self.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        logs.info(
            "sink started",
            sink=self.name,
            group=group_id(self.settings, self.name),
            topics=",".join(self.topics),
        )
        try:
            await self._loop(stop)
        finally:
            await self._shutdown()

    async def _loop(self, stop: asyncio.Event) -> None:
        idle = 0
        next_commit = time.monotonic() + self.commit_interval_s
        while not stop.is_set():
            room = self._flow_control()
            messages = self._consumer.consume(num_messages=room, timeout=0) if room else []
            for message in messages:
                self._accept(message)
            self._in_flight.set(self.tracker.in_flight)
            if self.health is not None:
                self.health.tick()
            if time.monotonic() >= next_commit:
                self._commit(asynchronous=True)
                next_commit = time.monotonic() + self.commit_interval_s
            idle = 0 if messages or not room else min(idle + 1, 25)
            # 0 when busy (yield to the lanes); when full, look again soon: lanes are draining
            await asyncio.sleep(idle * 0.002 if room else 0.001)

    def _flow_control(self, now: float | None = None) -> int:
        """How many records to read now (0: do not call consume); pauses after a long stall."""
        in_flight = self.tracker.in_flight
        limit = self.options.max_in_flight
        if self._paused:
            if in_flight <= limit // 2:
                self._consumer.resume(self._consumer.assignment())
                self._paused = False
                self._full_since = None
            return max(1, min(500, limit - in_flight))  # paused: consume only serves callbacks
        if in_flight < limit:
            self._full_since = None
            return min(500, limit - in_flight)
        now = time.monotonic() if now is None else now
        if self._full_since is None:
            self._full_since = now
        if now - self._full_since < PAUSE_AFTER_S:
            return 0
        self._consumer.pause(self._consumer.assignment())
        self._paused = True
        return 1

    # ------------------------------------------------------------------ records

    def _accept(self, message: Any) -> None:
        if message.error() is not None:
            logs.warning("consume error", sink=self.name, error=str(message.error()))
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        tracker = self.tracker.partitions.get((topic, partition))
        if tracker is None:
            return  # not ours any more
        tracker.read(offset)
        headers: KafkaHeaders = list(message.headers() or ())
        value: bytes = message.value() or b""
        provider = self.topics.get(topic, "")
        # one pass for the three headers read here (the last of repeated ones, as
        # `header_value` reads them): three scans were a visible cost per record
        ce_type = ce_source = late = None
        for name, header in headers:
            if name == "ce_type":
                ce_type = header
            elif name == "ce_source":
                ce_source = header
            elif name == LATE:
                late = header
        if (
            ce_type is not None
            and ce_source is not None
            and not self._wants(provider, ce_type.decode(errors="replace"), source_of(ce_source))
        ):
            tracker.finish(offset)  # routed on headers, never decoded
            return
        key: bytes | None = message.key()
        event: Event | None
        try:
            envelope = self._deserialize(value, topic)
        except SerdeError:
            event = None
        else:
            if (ce_type is None or ce_source is None) and not self._wants(
                provider, envelope.event_type, envelope.source
            ):
                tracker.finish(offset)
                return
            event = Event(
                envelope=envelope,
                value=value,
                key=key,
                headers=headers,
                topic=topic,
                partition=partition,
                offset=offset,
                late=late in LATE_VALUES,
            )
        item = _Item(value, key, headers, topic, partition, offset, tracker, event)
        lane_key = (topic, partition, key)
        lane = self.lanes.get(lane_key)
        if lane is not None:
            lane.append(item)
            return
        lane = self.lanes[lane_key] = deque((item,))
        self.lane_tasks[lane_key] = asyncio.create_task(self._drain_lane(lane_key, lane))

    def _wants(self, provider: str, event_type: str, source: str) -> bool:
        """`Route.wants`, memoised: fnmatch on every record was a visible cost."""
        memo = (provider, event_type, source)
        wanted = self._wanted.get(memo)
        if wanted is None:
            if len(self._wanted) >= 4096:  # event types come from senders: stay bounded
                self._wanted.clear()
            wanted = self._wanted[memo] = self.route.wants(provider, event_type, source)
        return wanted

    async def _drain_lane(
        self, lane_key: tuple[str, int, bytes | None], lane: deque[_Item]
    ) -> None:
        try:
            while lane:
                item = lane[0]
                await self._process(item)
                lane.popleft()
                item.tracker.finish(item.offset)
        finally:
            if self.lanes.get(lane_key) is lane:
                del self.lanes[lane_key]
                del self.lane_tasks[lane_key]

    async def _process(self, item: _Item) -> None:
        assert self._deliverer is not None and self._dlq is not None
        if item.event is None:
            outcome = Outcome("undecodable", detail="not an Avro envelope")
        else:
            outcome = await self._deliverer.deliver(item.event)
            if outcome.delivered:
                count = self._delivered.get(item.topic)
                if count is not None:
                    count(1)
                return
        event_id = item.event.event_id if item.event is not None else ""
        logs.warning(
            "dead-lettered",
            sink=self.name,
            event_id=event_id,
            reason=outcome.reason,
            status=outcome.status,
            attempts=outcome.attempts,
            detail=outcome.detail,
            topic=item.topic,
            partition=item.partition,
            offset=item.offset,
        )
        await self._dlq.send(
            value=item.value,
            key=item.key,
            headers=item.headers,
            topic=item.topic,
            partition=item.partition,
            offset=item.offset,
            outcome=outcome,
        )
        self.metrics.dead_lettered.labels(self.name, outcome.reason).inc()

    # ------------------------------------------------------------------ offsets

    def _commit(self, asynchronous: bool) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        if self._rewinding:
            self._rewind()
        offsets = self.tracker.committable()
        if not offsets and not self.sink.commits_offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if self.sink.commits_offsets:
                self.sink.commit_offsets(tps, self._consumer.consumer_group_metadata())
            elif tps:
                self._consumer.commit(offsets=tps, asynchronous=asynchronous)
        except KafkaException as exc:
            if not self.sink.commits_offsets:
                logs.warning("commit failed; will retry", sink=self.name, error=str(exc))
                return
            # The sink aborted its transaction: what it produced since its last commit
            # is gone, so redo everything after the committed offsets.
            logs.warning(
                "transaction aborted; redelivering from the committed offsets",
                sink=self.name,
                error=str(exc),
            )
            partitions = list(self.tracker.partitions)
            self._drop([TopicPartition(t, p) for t, p in partitions])
            self._rewinding.update(partitions)
            self._rewind()
            return
        self.tracker.committed(offsets)

    def _rewind(self) -> None:
        """Seek the dropped partitions to the group's committed offsets, then track them again.

        Until then their records are ignored (no tracker); if the committed offsets
        cannot be read, the next commit tick tries again.
        """
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        # Revoked since, or assigned afresh (starts at the committed offsets): done.
        self._rewinding = {
            tp for tp in self._rewinding if tp in assigned and tp not in self.tracker.partitions
        }
        if not self._rewinding:
            return
        try:
            found = self._consumer.committed(
                [TopicPartition(t, p) for t, p in self._rewinding], timeout=10
            )
            error = next((str(tp.error) for tp in found if tp.error is not None), None)
            if error is None:
                for tp in found:
                    offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING  # none committed
                    self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        except KafkaException as exc:
            error = str(exc)
        if error is not None:
            logs.warning("rewind failed; will retry", sink=self.name, error=error)
            return
        for topic, partition in self._rewinding:
            self.tracker.assign(topic, partition)
        self._rewinding.clear()
        self.assigned = bool(self.tracker.partitions)

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self.tracker.assign(tp.topic, tp.partition)
        self._paused = False
        self.assigned = True
        logs.info(
            "assigned",
            sink=self.name,
            partitions=",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions),
        )

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        self._commit(asynchronous=False)
        self._drop(partitions)

    def _on_lost(self, _consumer: Any, partitions: list[Any]) -> None:
        self._drop(partitions)

    def _drop(self, partitions: list[Any]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for lane_key, task in list(self.lane_tasks.items()):
            if lane_key[:2] in gone:
                task.cancel()
                del self.lanes[lane_key]
                del self.lane_tasks[lane_key]
        for topic, partition in gone:
            self.tracker.revoke(topic, partition)
        self.assigned = bool(self.tracker.partitions)

    # ------------------------------------------------------------------ stop

    async def _shutdown(self) -> None:
        tasks = list(self.lane_tasks.values())
        if tasks:
            logs.info("draining", sink=self.name, lanes=len(tasks), timeout_s=self.drain_timeout_s)
            _done, pending = await asyncio.wait(tasks, timeout=self.drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                logs.warning(
                    "abandoned in-flight deliveries (redelivered on restart)",
                    sink=self.name,
                    lanes=len(pending),
                )
        try:
            self._commit(asynchronous=False)
        finally:
            self._consumer.close()
            if self._dlq is not None:
                self._dlq.close()
            await self.sink.close()
            self._in_flight.set(0)
            logs.info("sink stopped", sink=self.name)

    def _breaker_changed(self, gauge: Any, is_open: bool) -> None:
        gauge.set(1 if is_open else 0)
        if is_open:
            logs.warning(
                "circuit breaker open", sink=self.name, cooldown_s=self.options.breaker_cooldown_s
            )
        else:
            logs.info("circuit breaker closed", sink=self.name)
