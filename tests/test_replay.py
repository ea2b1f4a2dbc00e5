"""`webhook-bridge replay`: ranges by offset and time, dry run, routing, the CLI."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from consumers.replay import ReplayRange, parse_time, range_from_args, replay
from deploy.cli import build_parser
from deploy.topics import ensure_topics
from schemas.errors import ConfigError
from schemas.topics import TopicSpec, names
from tests.conftest import KafkaCluster
from tests.receiver_support import (
    SECRET,
    SECRET_ENV,
    ScriptedReceiver,
    envelope,
    make_settings,
    produce,
)

ENV = {SECRET_ENV: SECRET}


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    r = ScriptedReceiver(SECRET).start()
    yield r
    r.stop()


def test_parse_time() -> None:
    assert parse_time(None, "--from-time") is None
    assert parse_time("2024-01-02T03:04:05Z", "--from-time") == 1704164645000
    assert parse_time("2024-01-02T04:04:05+01:00", "--to-time") == 1704164645000
    assert parse_time("2024-01-02T03:04:05", "--to-time") == 1704164645000  # naive = UTC
    with pytest.raises(ConfigError, match="--to-time: not an ISO 8601 instant"):
        parse_time("yesterday", "--to-time")


def test_cli_arguments_pick_the_topics() -> None:
    settings = make_settings("127.0.0.1:1", "rp", {"h": {"type": "log", "providers": ["beta"]}})
    parse = build_parser("replay").parse_args
    args = parse(["replay", "--sink", "h", "--from-dlq"])
    assert range_from_args(settings, args).topics == ("rp.dlq.h",)
    args = parse(["replay", "--sink", "h", "--from-offset", "3", "--to-offset", "9"])
    rng = range_from_args(settings, args)
    assert (rng.topics, rng.from_offset, rng.to_offset) == (("rp.beta.ordered",), 3, 9)
    with pytest.raises(ConfigError, match="--sink: no sink 'x'"):
        range_from_args(settings, parse(["replay", "--sink", "x"]))


@pytest.mark.kafka
def test_replay_offset_range_time_range_and_dry_run(
    kafka: KafkaCluster, unique_name: Callable[[str], str], receiver: ScriptedReceiver
) -> None:
    prefix = unique_name("rp")
    settings = make_settings(
        kafka.bootstrap,
        prefix,
        {
            "h": {
                "type": "http",
                "url": receiver.url(),
                "secret": SECRET_ENV,
                "event_types": ["thing.*"],
            }
        },
    )
    topic = names(settings).ordered("acme")
    ensure_topics(settings.admin_config(), [TopicSpec(topic, 1, 1)])
    produce(kafka.bootstrap, topic, [envelope(f"r{i}", "K", seq=i) for i in range(5)])
    produce(kafka.bootstrap, topic, [envelope("x5", "K", "other.type", seq=5)])
    time.sleep(0.05)
    middle = datetime.now(UTC)
    time.sleep(0.05)
    produce(kafka.bootstrap, topic, [envelope(f"r{i}", "K", seq=i) for i in (6, 7)])

    def run(rng: ReplayRange, dry_run: bool = False) -> tuple[str, list[str]]:
        before = len(receiver.snapshot())
        out = io.StringIO()
        report = asyncio.run(replay(settings, "h", rng, dry_run=dry_run, env=ENV, out=out))
        return report.line(dry_run), [d.event_id for d in receiver.snapshot()[before:]]

    line, got = run(ReplayRange((topic,), from_offset=1, to_offset=3, idle_timeout_s=2))
    assert got == ["r1", "r2", "r3"]
    assert line == "replay: read=3 delivered=3 failed=0 skipped=0"

    line, got = run(ReplayRange((topic,), idle_timeout_s=2), dry_run=True)
    assert got == []
    assert line == "replay: read=8 would deliver=7 failed=0 skipped=1"  # x5 not routed

    since = int(middle.timestamp() * 1000)
    line, got = run(ReplayRange((topic,), from_ms=since, idle_timeout_s=2))
    assert got == ["r6", "r7"]
    assert all(d.verified for d in receiver.snapshot())


@pytest.mark.kafka
def test_replay_into_a_kafka_sink_leaves_the_running_fanout_unfenced(
    kafka: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    """A kafka sink is transactional: a replay that took the fan-out's transactional.id
    would fence the live process, whose next commit would fail."""
    from consumers.sinks import Event, SinkContext, build_sink
    from tests.support import read_topic

    prefix = unique_name("rpk")
    out_topic = unique_name("rpk-out")
    settings = make_settings(kafka.bootstrap, prefix, {"k": {"type": "kafka", "topic": out_topic}})
    source = names(settings).ordered("acme")
    ensure_topics(settings.admin_config(), [TopicSpec(source, 1, 1), TopicSpec(out_topic, 1, 1)])
    produce(kafka.bootstrap, source, [envelope(f"p{i}", "K", seq=i) for i in range(2)])

    async def go() -> None:
        live = build_sink(settings.sinks["k"], SinkContext(settings, ENV))
        try:
            await live.deliver(Event(envelope("live-1", "K"), b"", b"K", [], source, 0, 0))
            rng = ReplayRange((source,), idle_timeout_s=2)
            report = await replay(settings, "k", rng, env=ENV, out=io.StringIO())
            assert report.line(False) == "replay: read=2 delivered=2 failed=0 skipped=0"
            live.commit_offsets([], None)  # fenced (SinkError) if replay took its id
        finally:
            await live.close()

    asyncio.run(go())
    records = read_topic(kafka.bootstrap, out_topic, expect=3)
    assert len(records) == 3  # two replayed + the live one, all committed
    assert {m.key() for m in records} == {b"K"}
