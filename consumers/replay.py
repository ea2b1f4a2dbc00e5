"""`webhook-bridge replay --sink NAME ...`: re-deliver events to one sink, idempotently.

Sources: the sink's DLQ (``--from-dlq``) or a topic (``--topic``, default the
`.ordered` topics the sink reads), narrowed by ``--from-offset/--to-offset``
(inclusive, per partition) or ``--from-time/--to-time`` (ISO 8601, compared with
each record's timestamp while reading: the embedded broker's `offsets_for_times`
and high watermark are wrong, so replay reads from the start of the range and
stops when every partition passed ``--to-offset`` or nothing arrived for
``--idle-timeout`` seconds). Deliveries carry the original event id as
webhook-id, so receivers deduplicate. A delivery that fails again is reported
and leaves the exit code 1; nothing is written to the DLQ by a replay.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas import logs
from schemas.config import Settings, SinkSettings
from schemas.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from schemas.config import add_config_argument

    add_config_argument(parser)
    parser.add_argument("--sink", required=True, metavar="NAME")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from-dlq", action="store_true", help="read <prefix>.dlq.<sink>")
    source.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="T",
        help="topic to read (repeatable; default: the sink's .ordered topics)",
    )
    parser.add_argument("--from-time", metavar="ISO", help="records at or after this instant")
    parser.add_argument("--to-time", metavar="ISO", help="records before this instant")
    parser.add_argument("--from-offset", type=int, metavar="N", help="first offset, per partition")
    parser.add_argument("--to-offset", type=int, metavar="M", help="last offset (inclusive)")
    parser.add_argument("--dry-run", action="store_true", help="list, do not deliver")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="stop after this long without a record (default 5)",
    )


@dataclass(frozen=True)
class ReplayRange:
    topics: tuple[str, ...]
    from_dlq: bool = False
    from_offset: int | None = None
    to_offset: int | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    idle_timeout_s: float = 5.0


@dataclass
class ReplayReport:
    read: int = 0
    delivered: int = 0
    failed: int = 0
    skipped: int = 0

    def line(self, dry_run: bool) -> str:
        verb = "would deliver" if dry_run else "delivered"
        return (
            f"replay: read={self.read} {verb}={self.delivered} failed={self.failed} "
            f"skipped={self.skipped}"
        )


def parse_time(text: str | None, flag: str) -> int | None:
    """ISO 8601 (``Z`` or offset; naive means UTC) -> epoch milliseconds."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(flag, f"not an ISO 8601 instant: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


async def replay(
    settings: Settings,
    sink_name: str,
    rng: ReplayRange,
    *,
    dry_run: bool = False,
    env: dict[str, str] | None = None,
    out: Any = sys.stdout,
) -> ReplayReport:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from consumers.fanout.delivery import Deliverer
    from consumers.fanout.policy import Breaker, Route, validate_sink
    from consumers.sinks import Event, SinkContext, build_sink
    from schemas.records import DLQ_TOPIC, KafkaHeaders, header_value, is_late, without_dlq
    from schemas.serde import EnvelopeDeserializer, SerdeError

    sink_settings = settings.sinks[sink_name]
    env = dict(os.environ) if env is None else env
    validate_sink(sink_settings, env)
    route = Route.of(sink_settings)
    deserialize = EnvelopeDeserializer(settings.bridge.schema_registry_url)
    consumer = Consumer(
        {
            **settings.consumer_config(),
            **logs.kafka_client_config("replay"),
            "group.id": f"{settings.bridge.topic_prefix}.replay",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    report = ReplayReport()
    sink = None
    if not dry_run:
        replay_settings, replay_sink = _own_identity(settings, sink_settings)
        sink = build_sink(replay_sink, SinkContext(replay_settings, env))
    try:
        assignment = []
        for topic in rng.topics:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                print(f"replay: topic {topic} not found", file=out)
                continue
            start = OFFSET_BEGINNING if rng.from_offset is None else rng.from_offset
            assignment += [TopicPartition(topic, p, start) for p in sorted(meta.partitions)]
        consumer.assign(assignment)
        open_partitions = {(tp.topic, tp.partition) for tp in assignment}
        deliverer = (
            None
            if sink is None
            else Deliverer(sink, sink_settings.retry, Breaker(1_000_000, 1.0), concurrency=1)
        )
        last_record = time.monotonic()
        while open_partitions and time.monotonic() - last_record < rng.idle_timeout_s:
            messages: list[Any] = await asyncio.to_thread(consumer.consume, 100, 0.2)
            for msg in messages:
                if msg.error() is not None:
                    continue
                last_record = time.monotonic()
                tp = (msg.topic(), msg.partition())
                if tp not in open_partitions:
                    continue
                if rng.to_offset is not None and msg.offset() > rng.to_offset:
                    open_partitions.discard(tp)
                    continue
                report.read += 1
                stamp = msg.timestamp()[1]
                if (rng.from_ms is not None and stamp < rng.from_ms) or (
                    rng.to_ms is not None and stamp >= rng.to_ms
                ):
                    report.skipped += 1
                    continue
                headers: KafkaHeaders = list(msg.headers() or ())
                origin = header_value(headers, DLQ_TOPIC)
                try:
                    envelope = deserialize(msg.value(), msg.topic())
                except SerdeError:
                    print(
                        f"replay: undecodable record {msg.topic()}[{msg.partition()}]"
                        f"@{msg.offset()}",
                        file=out,
                    )
                    report.failed += 1
                    continue
                if not rng.from_dlq and not route.wants(
                    envelope.provider, envelope.event_type, envelope.source
                ):
                    report.skipped += 1
                    continue
                event = Event(
                    envelope=envelope,
                    value=msg.value(),
                    key=msg.key(),
                    headers=without_dlq(headers),
                    topic=origin.decode() if origin else msg.topic(),
                    partition=msg.partition(),
                    offset=msg.offset(),
                    late=is_late(headers),
                )
                if deliverer is None:
                    print(
                        f"would deliver id={envelope.event_id} type={envelope.event_type} "
                        f"from={msg.topic()}[{msg.partition()}]@{msg.offset()}",
                        file=out,
                    )
                    report.delivered += 1
                    continue
                outcome = await deliverer.deliver(event)
                if outcome.delivered:
                    report.delivered += 1
                else:
                    report.failed += 1
                    print(
                        f"replay: failed id={envelope.event_id} reason={outcome.reason} "
                        f"status={outcome.status} attempts={outcome.attempts}",
                        file=out,
                    )
        if sink is not None and sink.commits_offsets:
            sink.commit_offsets([], None)
    finally:
        consumer.close()
        if sink is not None:
            await sink.close()
    return report


def range_from_args(settings: Settings, args: argparse.Namespace) -> ReplayRange:
    from consumers.fanout.runner import source_topics
    from schemas.topics import names

    if args.sink not in settings.sinks:
        raise ConfigError(
            "--sink", f"no sink {args.sink!r}; configured: {', '.join(settings.sinks) or '(none)'}"
        )
    if args.from_dlq:
        topics: tuple[str, ...] = (names(settings).dlq(args.sink),)
    elif args.topic:
        topics = tuple(args.topic)
    else:
        topics = tuple(source_topics(settings, settings.sinks[args.sink]))
    return ReplayRange(
        topics=topics,
        from_dlq=args.from_dlq,
        from_offset=args.from_offset,
        to_offset=args.to_offset,
        from_ms=parse_time(args.from_time, "--from-time"),
        to_ms=parse_time(args.to_time, "--to-time"),
        idle_timeout_s=args.idle_timeout,
    )


def run(args: argparse.Namespace) -> int:
    from schemas import config

    settings = config.load(args.config)
    logs.setup(settings.bridge.log_level, settings.bridge.log_format, process="replay")
    rng = range_from_args(settings, args)
    report = asyncio.run(replay(settings, args.sink, rng, dry_run=args.dry_run))
    print(report.line(args.dry_run))
    return 0 if report.failed == 0 else 1


def _own_identity(settings: Settings, sink: SinkSettings) -> tuple[Settings, SinkSettings]:
    """Settings under which the replay's sink cannot take over the running fan-out's
    identity: a transactional sink (kafka) that reused the fan-out's transactional.id
    would fence the live process. The suffix is unique per replay run."""
    suffix = f"replay.{os.getpid()}.{int(time.time())}"
    fanout = dataclasses.replace(
        settings.fanout, instance_id=f"{settings.fanout.instance_id}.{suffix}"
    )
    options = dict(sink.options)
    if isinstance(options.get("transactional_id"), str):
        options["transactional_id"] = f"{options['transactional_id']}.{suffix}"
    return dataclasses.replace(settings, fanout=fanout), dataclasses.replace(sink, options=options)
