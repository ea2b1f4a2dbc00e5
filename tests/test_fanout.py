"""Fan-out against a real broker and a real HTTP receiver (tests/receiver_support.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from consumers.replay import ReplayRange, replay
from deploy.topics import ensure_topics
from schemas.topics import TopicSpec, implied_topics, names
from tests.conftest import KafkaCluster
from tests.receiver_support import (
    SECRET,
    SECRET_ENV,
    FanoutThread,
    ScriptedReceiver,
    body_of,
    consume_all,
    envelope,
    make_settings,
    produce,
    wait_for,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    r = ScriptedReceiver(SECRET).start()
    yield r
    r.stop()


def http_sink(url: str, **extra: object) -> dict[str, object]:
    return {
        "type": "http",
        "url": url,
        "secret": SECRET_ENV,
        "timeout_s": 1.0,
        "retry": {
            "max_attempts": 3,
            "initial_backoff_s": 0.05,
            "max_backoff_s": 0.2,
            "max_elapsed_s": 120.0,
        },
        **extra,
    }


def test_retries_dead_letters_order_and_replay(
    kafka: KafkaCluster, unique_name: Callable[[str], str], receiver: ScriptedReceiver
) -> None:
    prefix = unique_name("fo")
    settings = make_settings(
        kafka.bootstrap,
        prefix,
        {
            "hook": http_sink(receiver.url(), breaker_failures=1000),
        },
    )
    ensure_topics(settings.admin_config(), implied_topics(settings))
    topic = names(settings).ordered("acme")
    receiver.script.update(
        {
            "a1": ["429:1", "500", "200"],  # retried twice (Retry-After honoured), then delivered
            "c1": ["410"],  # rejected: DLQ at once
            "d1": ["500", "500", "500"],  # budget (3 attempts) exhausted: DLQ
            "e1": ["close", "200"],  # connection dropped, then delivered
            "f1": ["hang", "200"],  # timeout, then delivered
        }
    )
    events = [envelope("a1", "A", seq=1), envelope("a2", "A", seq=2), envelope("a3", "A", seq=3)]
    events += [envelope(f"b{i}", "B", seq=i) for i in range(1, 6)]
    events += [
        envelope("c1", "C"),
        envelope("d1", "D"),
        envelope("e1", "E"),
        envelope("f1", "F", event_type="thing.created"),
    ]
    produce(kafka.bootstrap, topic, events)
    from confluent_kafka import Producer

    raw = Producer({"bootstrap.servers": kafka.bootstrap})
    raw.produce(topic, key=b"G", value=b"not an envelope", headers=[("ce_id", b"g1")])
    raw.flush(10)

    delivered_ids = {"a1", "a2", "a3", "b1", "b2", "b3", "b4", "b5", "e1", "f1"}
    with FanoutThread(settings) as fan:
        receiver.wait_for(
            lambda: {d.event_id for d in receiver.succeeded()} >= delivered_ids, what="deliveries"
        )
        dlq = consume_all(kafka.bootstrap, names(settings).dlq("hook"), 3)
        receiver.wait_for(
            lambda: (
                fan.metric(
                    "webhook_bridge_fanout_dead_lettered_total", sink="hook", reason="undecodable"
                )
                == 1
            )
        )
        metrics = {
            "delivered": fan.metric(
                "webhook_bridge_fanout_delivered_total", sink="hook", provider="acme"
            ),
            "retries": fan.metric("webhook_bridge_fanout_retries_total", sink="hook"),
            "rejected": fan.metric(
                "webhook_bridge_fanout_dead_lettered_total", sink="hook", reason="rejected"
            ),
            "exhausted": fan.metric(
                "webhook_bridge_fanout_dead_lettered_total", sink="hook", reason="budget_exhausted"
            ),
            "beta": fan.metric(
                "webhook_bridge_fanout_delivered_total", sink="hook", provider="beta"
            ),
            "breaker": fan.metric("webhook_bridge_fanout_breaker_open", sink="hook"),
        }
    assert metrics == {
        "delivered": 10,
        "retries": 6,
        "rejected": 1,
        "exhausted": 1,
        "beta": 0,
        "breaker": 0,
    }

    requests = receiver.snapshot()
    assert requests and all(d.verified for d in requests), "every delivery is signed"
    f1 = next(d for d in requests if d.event_id == "f1")
    assert f1.headers["x-webhook-provider"] == "acme"
    assert f1.headers["x-webhook-event-type"] == "thing.created"
    assert f1.headers["content-type"] == "application/json"
    assert f1.headers["x-webhook-occurred-at"].endswith("Z")
    assert body_of(f1) == {"id": "f1", "key": "F", "seq": 0}  # the original body

    # Order within key A: a2 is first tried only after a1 succeeded; B did not wait for A.
    a1 = [d for d in requests if d.event_id == "a1"]
    assert [d.action for d in a1] == ["429:1", "500", "200"]
    assert a1[1].at - a1[0].at >= 0.95, "Retry-After: 1 was honoured"
    first_a2 = min(d.at for d in requests if d.event_id == "a2")
    first_a3 = min(d.at for d in requests if d.event_id == "a3")
    assert a1[2].at < first_a2 < first_a3
    assert max(d.at for d in receiver.succeeded() if d.event_id.startswith("b")) < a1[2].at

    # Dead letters: value unchanged, reason headers, original coordinates and ce_* headers.
    by_id = {dict(m.headers())["ce_id"]: m for m in dlq}
    assert set(by_id) == {b"c1", b"d1", b"g1"}
    c1 = dict(by_id[b"c1"].headers())
    assert (
        c1["x-dlq-reason"],
        c1["x-dlq-last-status"],
        c1["x-dlq-attempts"],
        c1["x-dlq-sink"],
    ) == (b"rejected", b"410", b"1", b"hook")
    assert c1["x-dlq-topic"] == topic.encode() and c1["ce_type"] == b"thing.updated"
    assert int(c1["x-dlq-offset"]) >= 0 and int(c1["x-dlq-partition"]) >= 0
    d1 = dict(by_id[b"d1"].headers())
    assert (d1["x-dlq-reason"], d1["x-dlq-last-status"], d1["x-dlq-attempts"]) == (
        b"budget_exhausted",
        b"500",
        b"3",
    )
    assert dict(by_id[b"g1"].headers())["x-dlq-reason"] == b"undecodable"
    assert by_id[b"g1"].value() == b"not an envelope"
    assert by_id[b"c1"].key() == b"C"

    # Replay from the DLQ: delivered again, same webhook-id; the undecodable one fails.
    rng = ReplayRange((names(settings).dlq("hook"),), from_dlq=True, idle_timeout_s=2.0)
    report = asyncio.run(replay(settings, "hook", rng, env={SECRET_ENV: SECRET}))
    assert (report.delivered, report.failed) == (2, 1)
    replayed = [d for d in receiver.snapshot()[len(requests) :]]
    assert sorted(d.event_id for d in replayed) == ["c1", "d1"]
    assert all(d.verified and d.action == "200" for d in replayed)


def test_failing_sink_stalls_no_other_sink_and_breaker_opens(
    kafka: KafkaCluster, unique_name: Callable[[str], str], receiver: ScriptedReceiver
) -> None:
    patient = {
        "max_attempts": 1000,
        "initial_backoff_s": 0.05,
        "max_backoff_s": 0.2,
        "max_elapsed_s": 600.0,
    }
    prefix = unique_name("fo")
    settings = make_settings(
        kafka.bootstrap,
        prefix,
        {
            "good": http_sink(receiver.url("good")),
            "bad": {
                **http_sink(receiver.url("bad"), breaker_failures=3, breaker_cooldown_s=0.5),
                "retry": patient,
            },
            "routed": {
                **http_sink(receiver.url("routed")),
                "providers": ["be*"],
                "event_types": ["order.*"],
            },
            "eu": {**http_sink(receiver.url("eu")), "sources": ["*-eu"]},
        },
    )
    ensure_topics(settings.admin_config(), implied_topics(settings))
    receiver.path_default["bad"] = "500"
    acme = [envelope(f"e{i}", f"K{i % 4}", seq=i) for i in range(20)]
    beta = [
        envelope("o1", "X", "order.created", "beta"),
        envelope("r1", "X", "refund.created", "beta"),
        envelope("s1", "Y", "order.created", "beta", source="beta-eu"),  # same provider,
        envelope("s2", "Y", "order.created", "beta", source="beta-us"),  # two sources
    ]
    produce(
        kafka.bootstrap,
        names(settings).ordered("acme"),
        [*acme[:1], envelope("o0", "K0", "order.created"), *acme[1:]],
    )
    produce(kafka.bootstrap, names(settings).ordered("beta"), beta)

    with FanoutThread(settings) as fan:
        want = {e.event_id for e in acme} | {"o0", "o1", "r1", "s1", "s2"}
        receiver.wait_for(
            lambda: {d.event_id for d in receiver.succeeded("good")} == want,
            what="the good sink's deliveries",
        )
        receiver.wait_for(
            lambda: fan.metric("webhook_bridge_fanout_breaker_open", sink="bad") == 1,
            what="the breaker to open",
        )
        assert receiver.succeeded("bad") == []
        receiver.path_default["bad"] = "200"  # the destination recovers
        receiver.wait_for(
            lambda: {d.event_id for d in receiver.succeeded("bad")} == want,
            what="the bad sink to catch up",
        )
        receiver.wait_for(
            lambda: fan.metric("webhook_bridge_fanout_breaker_open", sink="bad") == 0,
            what="the breaker to close",
        )
        retries = fan.metric("webhook_bridge_fanout_retries_total", sink="bad")
    assert retries >= 3

    # Routing: only beta's order.* reached the routed sink; only the -eu source the eu sink.
    assert sorted(d.event_id for d in receiver.snapshot("routed")) == ["o1", "s1", "s2"]
    assert [d.event_id for d in receiver.snapshot("eu")] == ["s1"]
    # Per key order held on the recovered sink.
    for key in ("K0", "K1", "K2", "K3"):
        seqs = [
            body_of(d)["seq"]
            for d in receiver.succeeded("bad")
            if body_of(d)["key"] == key and body_of(d)["id"] != "o0"
        ]
        assert seqs == sorted(seqs)


def test_kafka_and_log_sinks(kafka: KafkaCluster, unique_name: Callable[[str], str]) -> None:
    prefix = unique_name("fo")
    settings = make_settings(
        kafka.bootstrap,
        prefix,
        {
            "internal": {"type": "kafka", "topic": f"int-{prefix}.{{provider}}.{{event_type}}"},
            "bodies": {
                "type": "kafka",
                "topic": f"body-{prefix}",
                "value": "body",
                "event_types": ["payment/*"],
            },
            "audit": {"type": "log"},
        },
    )
    ensure_topics(settings.admin_config(), implied_topics(settings))
    # A kafka sink writes to topics that exist: nothing is created by auto-creation.
    sink_topics = [f"int-{prefix}.acme.payment_created", f"int-{prefix}.acme.payment.updated"]
    ensure_topics(
        settings.admin_config(),
        [TopicSpec(name, 1, 1) for name in (*sink_topics, f"body-{prefix}")],
    )
    events = [
        envelope(f"p{i}", f"K{i % 3}", "payment/created" if i % 2 else "payment.updated", seq=i)
        for i in range(10)
    ]
    from schemas.serde import EnvelopeSerializer

    topic = names(settings).ordered("acme")
    produce(kafka.bootstrap, topic, events)
    with FanoutThread(settings) as fan:
        created = consume_all(kafka.bootstrap, f"int-{prefix}.acme.payment_created", 5)
        updated = consume_all(kafka.bootstrap, f"int-{prefix}.acme.payment.updated", 5)
        bodies = consume_all(kafka.bootstrap, f"body-{prefix}", 5)
        for sink, want in (("internal", 10.0), ("bodies", 5.0), ("audit", 10.0)):

            def delivered(sink: str = sink, want: float = want) -> bool:
                name = "webhook_bridge_fanout_delivered_total"
                return fan.metric(name, sink=sink, provider="acme") == want

            wait_for(delivered, what=f"{sink} deliveries")
    serialize = EnvelopeSerializer()
    by_id = {e.event_id: e for e in events}
    for msg in created + updated:
        headers = dict(msg.headers())
        original = by_id[headers["ce_id"].decode()]
        assert msg.value() == serialize(original, topic)  # envelope bytes unchanged
        assert msg.key() == original.ordering_key.encode()
    assert {dict(m.headers())["ce_id"] for m in created} == {b"p1", b"p3", b"p5", b"p7", b"p9"}
    assert sorted(m.value() for m in bodies) == sorted(by_id[f"p{i}"].body for i in (1, 3, 5, 7, 9))


def test_lag_gauge_shows_a_stalled_sink_and_clears(
    kafka: KafkaCluster, unique_name: Callable[[str], str], receiver: ScriptedReceiver
) -> None:
    """A sink that cannot deliver stops reading at max_in_flight: the rest shows as lag."""
    prefix = unique_name("lag")
    patient = {"max_attempts": 1000, "initial_backoff_s": 0.05, "max_backoff_s": 0.1}
    settings = make_settings(
        kafka.bootstrap,
        prefix,
        {"slow": {**http_sink(receiver.url("slow"), max_in_flight=5), "retry": patient}},
    )
    ensure_topics(settings.admin_config(), implied_topics(settings))
    receiver.path_default["slow"] = "500"
    topic = names(settings).ordered("acme")
    for i in range(40):  # one record per batch: the embedded broker's watermark is then right
        produce(kafka.bootstrap, topic, [envelope(f"l{i}", f"K{i}", seq=i)])
    with FanoutThread(settings) as fan:
        receiver.wait_for(
            lambda: fan.metric("webhook_bridge_fanout_consumer_lag_messages", sink="slow") >= 30,
            what="the lag gauge to show the unread records",
        )
        receiver.path_default["slow"] = "200"
        receiver.wait_for(
            lambda: (
                len({d.event_id for d in receiver.succeeded("slow")}) == 40
                and fan.metric("webhook_bridge_fanout_consumer_lag_messages", sink="slow") == 0
            ),
            what="the lag to clear",
        )
