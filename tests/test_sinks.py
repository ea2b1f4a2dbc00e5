"""Sink classes: option validation, registry, signing, topic templates, HTTP outcomes."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.fanout.policy import validate_sink
from consumers.sinks import (
    DeliveryResult,
    Event,
    Sink,
    SinkContext,
    build_sink,
    sink_class,
)
from consumers.sinks.http import HttpSink
from consumers.sinks.kafka import render_topic, sanitise_topic
from schemas import config, standard_webhooks
from schemas.config import RetrySettings, SinkSettings
from schemas.errors import ConfigError
from tests.receiver_support import (
    SECRET,
    SECRET_ENV,
    ScriptedReceiver,
    envelope,
    expected_signature,
    make_settings,
)

ENV = {SECRET_ENV: SECRET}
NOT_PEM = str(Path(__file__).resolve().parents[1] / "pyproject.toml")


def settings_of(sink_type: str, name: str = "s", **options: Any) -> SinkSettings:
    return SinkSettings(name, sink_type, ("*",), ("*",), RetrySettings(), options)


class EchoSink(Sink):
    """A custom sink plugged in by "module:Class" (the README example's shape)."""

    OPTIONS = ("prefix",)

    async def deliver(self, event: Event) -> DeliveryResult:
        return DeliveryResult.ok()


# Standard Webhooks reference vector (svix libraries' tests).
def test_signature_matches_the_standard_webhooks_vector() -> None:
    key = standard_webhooks.decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    headers = standard_webhooks.sign(
        standard_webhooks.Keys([("", key)]),
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    sig = headers["webhook-signature"]
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert headers["webhook-timestamp"] == "1614265330"
    assert standard_webhooks.verify_signature(
        key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        b'{"test": 2432232314}',
        f"v1,bogus {sig}",
    )
    assert not standard_webhooks.verify_signature(
        key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331", b'{"test": 2432232314}', sig
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("internal.jiko.payment.created", "internal.jiko.payment.created"),
        ("internal.github.pull_request/opened", "internal.github.pull_request_opened"),
        ("internal.x.événement reçu", "internal.x._v_nement_re_u"),
        ("internal.x.a:b*c", "internal.x.a_b_c"),
        ("..", "__"),
        ("", "_"),
        ("a" * 300, "a" * 249),
    ],
)
def test_sanitise_topic(name: str, expected: str) -> None:
    assert sanitise_topic(name) == expected


def test_render_topic_fills_the_template() -> None:
    assert (
        render_topic(
            "internal.{provider}.{event_type}",
            provider="stripe",
            event_type="invoice paid",
            source="stripe",
            sink="k",
        )
        == "internal.stripe.invoice_paid"
    )
    assert (
        render_topic("{sink}-{source}", provider="p", event_type="t", source="src", sink="k")
        == "k-src"
    )


@pytest.mark.parametrize(
    ("sink_type", "options", "error"),
    [
        ("http", {}, r"sinks\.s\.url: required"),
        ("http", {"url": "ftp://x/y", "secret": SECRET_ENV}, r"sinks\.s\.url: must be"),
        ("http", {"url": "http://127.0.0.1:1/e"}, r"sinks\.s\.secret: required"),
        (
            "http",
            {"url": "http://127.0.0.1:1/e", "secret": "UNSET_VAR"},
            r"sinks\.s\.secret: environment variable UNSET_VAR is not set",
        ),
        ("http", {"url": "http://127.0.0.1:1/e", "secret": "BAD"}, r"sinks\.s\.secret: .*whsec_"),
        (
            "http",
            {"url": "http://127.0.0.1:1/e", "secret": SECRET_ENV, "timeout_s": -1},
            r"sinks\.s\.timeout_s",
        ),
        (
            "http",
            {"url": "https://127.0.0.1:1/e", "secret": SECRET_ENV, "ca_file": "/nonexistent.pem"},
            r"sinks\.s\.ca_file: cannot read /nonexistent\.pem",
        ),
        (
            "http",
            {"url": "https://127.0.0.1:1/e", "secret": SECRET_ENV, "ca_file": NOT_PEM},
            r"sinks\.s\.ca_file: not a PEM bundle",
        ),
        (
            "http",
            {"url": "http://127.0.0.1:1/e", "secret": SECRET_ENV, "proxy_from_env": "yes"},
            r"sinks\.s\.proxy_from_env: must be true or false",
        ),
        (
            "http",
            {"url": "http://127.0.0.1:1/e", "secret": SECRET_ENV, "max_connections": 0},
            r"sinks\.s\.max_connections",
        ),
        (
            "http",
            {"url": "http://127.0.0.1:1/e", "secret": SECRET_ENV, "retries": 3},
            r"sinks\.s\.retries: unknown option; valid: concurrency",
        ),
        ("kafka", {"topic": "internal.{tenant}"}, r"sinks\.s\.topic: unknown field \{tenant\}"),
        ("kafka", {"topic": "internal.{"}, r"sinks\.s\.topic: not a valid template"),
        ("kafka", {"value": "json"}, r"sinks\.s\.value: unsupported value 'json'"),
        ("log", {"url": "x"}, r"sinks\.s\.url: unknown option"),
        ("smtp", {}, r"sinks\.s\.type: unknown sink type 'smtp'; valid: http, kafka, log"),
        ("nowhere.module:Sink", {}, r"sinks\.s\.type: cannot import nowhere\.module"),
        ("tests.test_sinks:settings_of", {}, r"sinks\.s\.type: .* is not a .*Sink subclass"),
        ("tests.test_sinks:EchoSink", {"colour": 1}, r"sinks\.s\.colour: unknown option"),
        ("log", {"concurrency": "many"}, r"sinks\.s\.concurrency: must be an integer"),
    ],
)
def test_validate_sink_names_the_key(sink_type: str, options: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        validate_sink(settings_of(sink_type, **options), {**ENV, "BAD": "not-base64!"})


def test_registry_resolves_aliases_and_custom_classes() -> None:
    assert sink_class(settings_of("http")) is HttpSink
    assert sink_class(settings_of("tests.test_sinks:EchoSink")) is EchoSink
    validate_sink(settings_of("tests.test_sinks:EchoSink", prefix="x"), {})
    validate_sink(settings_of("kafka"), {})
    validate_sink(settings_of("log", concurrency=4, breaker_failures=2), {})


def test_demo_config_sinks_validate() -> None:
    env = {"DEMO_RECEIVER_SECRET": SECRET, "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    env |= {
        f"{p}_WEBHOOK_SECRET": "whsec_" + SECRET[6:]
        for p in ("JIKO", "JUSTWALLET", "JPMORGAN", "FINTOC", "GITHUB", "STRIPE", "SVIX")
    }
    settings = config.load("deploy/demo.toml", env)
    assert set(settings.sinks) == {"log", "demo-receiver"}
    for sink in settings.sinks.values():
        validate_sink(sink, env)


# ------------------------------------------------------------------ HTTP outcomes


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    r = ScriptedReceiver(SECRET).start()
    yield r
    r.stop()


def deliver_all(receiver: ScriptedReceiver, actions: list[str]) -> list[DeliveryResult]:
    settings = make_settings(
        "127.0.0.1:1",
        "unit",
        {"h": {"type": "http", "url": receiver.url(), "secret": SECRET_ENV, "timeout_s": 0.5}},
    )

    async def go() -> list[DeliveryResult]:
        sink = build_sink(settings.sinks["h"], SinkContext(settings, ENV))
        out = []
        for i, action in enumerate(actions):
            env = envelope(f"u{i}", "K")
            receiver.script[env.event_id] = [action]
            out.append(await sink.deliver(Event(env, b"", b"K", [], "t", 0, i)))
        await sink.close()
        return out

    return asyncio.run(go())


def test_http_outcomes_are_classified(receiver: ScriptedReceiver) -> None:
    http_date = email.utils.formatdate(time.time() + 30, usegmt=True)
    results = deliver_all(
        receiver,
        [
            "200",
            "204",
            "500",
            "503",
            "408",
            "429:7",
            f"429:{http_date}",
            "410",
            "400",
            "hang",
            "close",
        ],
    )
    summary = [(r.outcome, r.status) for r in results]
    assert summary == [
        ("ok", 200),
        ("ok", 204),
        ("retry", 500),
        ("retry", 503),
        ("retry", 408),
        ("retry", 429),
        ("retry", 429),
        ("reject", 410),
        ("reject", 400),
        ("retry", None),
        ("retry", None),
    ]
    assert results[5].retry_after_s == 7.0
    assert results[6].retry_after_s is not None and 25 < results[6].retry_after_s <= 30
    assert results[9].reason == "timeout"
    assert results[10].reason.startswith("network")
    first = receiver.snapshot()[0]
    assert first.verified
    assert first.headers["webhook-signature"] == expected_signature(
        SECRET, "u0", first.headers["webhook-timestamp"], first.body
    )
    assert abs(int(first.headers["webhook-timestamp"]) - time.time()) < 60
