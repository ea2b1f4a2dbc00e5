"""The gateway end to end: uvicorn on a free port, real HTTP, the envelope read back from Kafka."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from deploy.samples import sample_body
from deploy.topics import ensure_topics
from gateway.app import create_app
from gateway.sources import verify_context
from gateway.verify import sign_request
from schemas.config import Settings
from schemas.records import header_value
from schemas.serde import EnvelopeDeserializer
from schemas.topics import implied_topics, names
from tests.conftest import KafkaCluster
from tests.support import gateway_toml, read_topic, serve, settings_from_toml

pytestmark = pytest.mark.kafka


@dataclass
class Gateway:
    url: str
    settings: Settings
    bootstrap: str

    def signed(self, source: str, body: bytes, **kwargs: str) -> dict[str, str]:
        src = self.settings.sources[source]
        headers = sign_request(
            src.scheme, verify_context(self.settings, src.name), body, time.time(), **kwargs
        )
        return {"content-type": "application/json", **headers}

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(
            f"{self.url}/webhooks/{source}", content=body, headers=headers, timeout=10
        )

    def topic(self, provider: str) -> str:
        return names(self.settings).raw(provider)


# Both ways a webhook POST is served: "direct" is the gateway's own server configuration
# (gateway.server), where the connection serves a plain webhook POST itself
# (gateway.connections); "asgi" is a plain uvicorn, where every request is an ASGI call
# to the same endpoint. Every test here holds for both.
PATHS = ["direct", "asgi"]


@pytest.fixture(scope="module", params=PATHS)
def gateway(kafka: KafkaCluster, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    prefix = f"e2e-{request.param}-{time.time_ns()}"
    settings = settings_from_toml(gateway_toml(kafka.bootstrap, prefix))
    ensure_topics(settings.admin_config(), implied_topics(settings))
    with serve(create_app(settings), settings if request.param == "direct" else None) as url:
        yield Gateway(url, settings, kafka.bootstrap)


def test_health_and_readiness(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200


@pytest.mark.parametrize("source", ["jiko", "fintoc", "justwallet"])
def test_verified_webhook_becomes_an_envelope_in_kafka(gateway: Gateway, source: str) -> None:
    scheme = gateway.settings.sources[source].scheme
    body = sample_body(scheme, event_id=f"evt_{source}_{time.time_ns()}", now=time.time())
    response = gateway.post(source, body, gateway.signed(source, body))
    expected_status = gateway.settings.sources[source].success_status
    assert response.status_code == expected_status
    answer = response.json()
    assert answer["status"] == "accepted"
    event_id = answer["event_id"]
    assert response.headers["x-request-id"] == answer["request_id"]

    records = [
        m
        for m in read_topic(gateway.bootstrap, gateway.topic(source), idle_s=2)
        if m.key() == event_id.encode()
    ]
    assert len(records) == 1
    message = records[0]
    envelope = EnvelopeDeserializer()(message.value())
    assert envelope.body == body
    assert envelope.event_id == event_id
    assert envelope.source == source and envelope.provider == source
    assert envelope.verification.scheme == scheme
    assert envelope.verification.key_id == gateway.settings.sources[source].secrets[0]
    assert envelope.request_id == answer["request_id"]
    headers = message.headers()
    assert header_value(headers, "ce_id") == event_id.encode()
    assert header_value(headers, "ce_source") == f"/webhooks/{source}".encode()
    assert header_value(headers, "ce_type") == envelope.event_type.encode()
    assert header_value(headers, "ce_subject") == envelope.ordering_key.encode()


def test_duplicate_delivery_gets_the_same_answer(gateway: Gateway) -> None:
    body = sample_body("fintoc", event_id=f"evt_dup_{time.time_ns()}", now=time.time())
    first = gateway.post("fintoc", body, gateway.signed("fintoc", body))
    second = gateway.post("fintoc", body, gateway.signed("fintoc", body))
    assert first.status_code == second.status_code == 200
    assert first.json()["event_id"] == second.json()["event_id"]
    copies = [
        m
        for m in read_topic(gateway.bootstrap, gateway.topic("fintoc"), idle_s=2)
        if m.key() == first.json()["event_id"].encode()
    ]
    assert len(copies) == 2  # both stored; the compactor drops the second
    assert len({m.partition() for m in copies}) == 1  # same key, same partition


def count(gateway: Gateway, topic: str, marker: bytes) -> int:
    return sum(
        1 for m in read_topic(gateway.bootstrap, topic, idle_s=1.5) if marker in (m.value() or b"")
    )


def test_bad_signature_is_401_and_never_published(gateway: Gateway) -> None:
    marker = f"unverified-{time.time_ns()}".encode()
    body = sample_body("jiko", event_id=marker.decode(), now=time.time())
    headers = gateway.signed("jiko", body)
    tampered = body.replace(b"12.50", b"99.99")
    response = gateway.post("jiko", tampered, headers)
    assert response.status_code == 401
    assert response.json()["reason"] == "bad_signature"
    missing = gateway.post("jiko", body, {"content-type": "application/json"})
    assert missing.status_code == 401 and missing.json()["reason"] == "missing_header"
    assert count(gateway, gateway.topic("jiko"), marker) == 0
    assert count(gateway, names(gateway.settings).quarantine, marker) == 0


def test_unknown_source_is_404_without_a_new_label(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/webhooks/evil-{time.time_ns()}", content=b"{}")
    assert response.status_code == 404
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert "evil-" not in metrics
    assert 'webhook_bridge_gateway_requests_total{outcome="not_found",source="_unknown"}' in metrics
    # the 404 count is its only series: nothing else can happen to an unknown path
    unknown = [line for line in metrics.splitlines() if 'source="_unknown"' in line]
    assert unknown and all(line.startswith("webhook_bridge_gateway_requests_") for line in unknown)


def test_a_trailing_slash_is_answered_as_without_it_never_redirected(gateway: Gateway) -> None:
    body = sample_body("fintoc", event_id=f"evt_slash_{time.time_ns()}", now=time.time())
    response = httpx.post(
        f"{gateway.url}/webhooks/fintoc/",
        content=body,
        headers=gateway.signed("fintoc", body),
        follow_redirects=False,
    )
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    unsigned = httpx.post(f"{gateway.url}/webhooks/jiko/", content=b"{}", follow_redirects=False)
    assert unsigned.status_code == 401
    unknown = httpx.post(f"{gateway.url}/webhooks/nope/", content=b"{}", follow_redirects=False)
    assert unknown.status_code == 404
    for path in ("/healthz/", "/metrics/", "/webhooks/jiko//", "/webhooks/"):
        answer = httpx.get(f"{gateway.url}{path}", follow_redirects=False)
        assert answer.status_code == 404, path


def test_wrong_method_is_405(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/webhooks/jiko")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_too_large_by_declared_length_is_413(gateway: Gateway) -> None:
    body = b"x" * 5000  # jiko's body_limit is 4096 in this config
    response = gateway.post("jiko", body, {"content-type": "application/json"})
    assert response.status_code == 413


def padded_body(scheme: str, size: int, marker: str) -> bytes:
    """A sample webhook padded to exactly `size` bytes (still valid JSON)."""
    document = json.loads(sample_body(scheme, event_id=marker, now=time.time()))
    document["padding"] = ""
    short = len(json.dumps(document, separators=(",", ":")).encode())
    document["padding"] = "p" * (size - short)
    body = json.dumps(document, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def test_a_body_of_exactly_body_limit_is_stored_and_one_more_byte_is_413(gateway: Gateway) -> None:
    limit = gateway.settings.sources["jiko"].body_limit
    marker = f"at-limit-{time.time_ns()}"
    body = padded_body("jiko", limit, marker)
    stored = gateway.post("jiko", body, gateway.signed("jiko", body))
    assert stored.status_code == 202 and stored.json()["status"] == "accepted"
    over = padded_body("jiko", limit + 1, marker + "-over")
    refused = gateway.post("jiko", over, gateway.signed("jiko", over))
    assert refused.status_code == 413 and refused.json()["error"] == "body too large"
    found = [
        EnvelopeDeserializer()(m.value())
        for m in read_topic(gateway.bootstrap, gateway.topic("jiko"), idle_s=2)
        if marker.encode() in m.value()
    ]
    assert [e.body for e in found] == [body]  # the one at the limit, never the one over


def test_too_large_streamed_body_is_413_without_reading_it_all(gateway: Gateway) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(2000):  # up to 2 MB offered; the gateway stops after 4 KiB
            sent += 1024
            yield b"y" * 1024

    try:
        response = httpx.post(
            f"{gateway.url}/webhooks/jiko",
            content=chunks(),
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 413
    except httpx.TransportError:
        pass  # the server may close the connection while we still write: also a refusal
    assert sent < 2000 * 1024


def test_verified_but_malformed_body_is_quarantined_and_acknowledged(gateway: Gateway) -> None:
    marker = f"q-{time.time_ns()}"
    body = f'{{"payload": "{marker}", "broken": '.encode()
    response = gateway.post("jiko", body, gateway.signed("jiko", body))
    assert response.status_code == gateway.settings.sources["jiko"].success_status == 202
    assert response.json()["status"] == "quarantined"
    assert response.json()["reason"] == "body is not valid JSON"
    found = [
        m
        for m in read_topic(gateway.bootstrap, names(gateway.settings).quarantine, idle_s=2)
        if marker.encode() in m.value()
    ]
    assert len(found) == 1
    assert header_value(found[0].headers(), "x-quarantine-reason") == b"body is not valid JSON"
    assert EnvelopeDeserializer()(found[0].value()).body == body


def test_metrics_record_outcomes_and_matched_key(gateway: Gateway) -> None:
    body = sample_body("fintoc", now=time.time())
    assert gateway.post("fintoc", body, gateway.signed("fintoc", body)).status_code == 200
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert (
        'webhook_bridge_gateway_verified_total{key_id="FINTOC_WEBHOOK_SECRET",mode="default",'
        'scheme="fintoc",source="fintoc"}'
    ) in metrics
    assert "webhook_bridge_gateway_publish_duration_seconds_bucket" in metrics
    assert 'webhook_bridge_gateway_deadline_seconds{source="fintoc"} 1.0' in metrics


def test_send_command_posts_a_signed_webhook(
    gateway: Gateway,
    capsys: pytest.CaptureFixture[str],
    tmp_path: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deploy.cli import main
    from tests.support import DEMO_ENV, write_file

    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)
    config = write_file(
        tmp_path / "c.toml",  # type: ignore[operator]
        gateway_toml(gateway.bootstrap, gateway.settings.bridge.topic_prefix),
    )
    assert main(["send", "fintoc", "--config", str(config), "--url", gateway.url]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("200 ")
    assert json.loads(line[4:])["status"] == "accepted"
    # A body the gateway can only quarantine is stored, but `send` says it failed.
    broken = write_file(tmp_path / "broken.json", '{"half": ')  # type: ignore[operator]
    argv = ["send", "jiko", "--body", str(broken), "--config", str(config), "--url", gateway.url]
    assert main(argv) == 1
    assert json.loads(capsys.readouterr().out.strip()[4:])["status"] == "quarantined"


def test_send_to_a_header_typed_scheme_needs_no_event_option(
    kafka: KafkaCluster,
    capsys: pytest.CaptureFixture[str],
    tmp_path: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GitHub carries the event type in X-GitHub-Event: `send` must set one by default."""
    from deploy.cli import main
    from tests.support import DEMO_ENV, write_file

    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)
    extra = '[sources.gh]\nscheme = "github"\nsecrets = ["GITHUB_WEBHOOK_SECRET"]\n'
    text = gateway_toml(kafka.bootstrap, f"send-gh-{time.time_ns()}", extra)
    settings = settings_from_toml(text, DEMO_ENV)
    ensure_topics(settings.admin_config(), implied_topics(settings))
    config = write_file(tmp_path / "c.toml", text)  # type: ignore[operator]
    with serve(create_app(settings), settings) as url:
        assert main(["send", "gh", "--config", str(config), "--url", url]) == 0
    answer = json.loads(capsys.readouterr().out.strip()[4:])
    assert answer["status"] == "accepted", answer


@pytest.mark.parametrize("path", PATHS)
def test_body_sent_too_slowly_is_408(kafka: KafkaCluster, path: str) -> None:
    """A client that declares a body and stalls cannot hold a request open forever."""
    import socket

    prefix = f"slow-{time.time_ns()}"
    settings = settings_from_toml(
        gateway_toml(kafka.bootstrap, prefix) + "\n[gateway]\nbody_timeout_s = 0.5\n"
    )
    with serve(create_app(settings), settings if path == "direct" else None) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /webhooks/jiko HTTP/1.1\r\nHost: x\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a"'
            )
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in answer.lower()
        metrics = httpx.get(f"{url}/metrics").text
        assert (
            'webhook_bridge_gateway_requests_total{outcome="too_slow",source="jiko"} 1.0' in metrics
        )


def test_client_disconnecting_mid_body_is_not_an_error(gateway: Gateway) -> None:
    """The ASGI endpoint itself: a disconnect mid-body raises nothing and answers nothing."""
    import asyncio

    from gateway.endpoint import WebhookEndpoint

    app = create_app(gateway.settings)
    from starlette.routing import Route

    endpoint = next(
        r.endpoint for r in app.routes if isinstance(r, Route) and r.path == "/webhooks/{source}"
    )
    assert isinstance(endpoint, WebhookEndpoint)
    messages: Iterator[dict[str, object]] = iter(
        [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]
    )
    sent: list[object] = []

    async def receive() -> dict[str, object]:
        return next(messages)

    async def send(message: object) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/jiko",
        "headers": [(b"content-length", b"100")],
        "path_params": {"source": "jiko"},
    }
    asyncio.run(endpoint(scope, receive, send))
    assert sent == []
    assert endpoint.in_flight == 0


def test_no_secret_or_signature_in_logs_or_answers(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support import DEMO_ENV

    caplog.set_level("DEBUG")
    body = sample_body("fintoc", now=time.time())
    good = {k.lower(): v for k, v in gateway.signed("fintoc", body).items()}
    answers = [
        gateway.post("fintoc", body, good).text,
        gateway.post("fintoc", body + b" ", good).text,  # bad signature
        gateway.post("fintoc", body, {**good, "fintoc-signature": "t=1,v1=" + "0" * 64}).text,
        gateway.post("jiko", b"{not json", gateway.signed("jiko", b"{not json")).text,
    ]
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "verification failed" in logged  # the failures were logged...
    for secret in DEMO_ENV.values():  # ...without any secret or signature
        assert secret not in logged
        assert all(secret not in answer for answer in answers)
    assert good["fintoc-signature"].split("v1=")[1] not in logged


def test_a_published_request_is_logged_only_at_debug(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """One "published" line per acknowledged request at debug level, with its event id
    and topic; none at info (the endpoint gathers the line's fields only when debug is on)."""

    def published(event_id: str) -> list[dict[str, str]]:
        return [
            r.fields  # type: ignore[attr-defined]
            for r in caplog.records
            if r.getMessage() == "published" and r.fields.get("event_id") == event_id  # type: ignore[attr-defined]
        ]

    quiet, loud = (f"evt_{level}_{time.time_ns()}" for level in ("info", "debug"))
    caplog.set_level("INFO", logger="webhook_bridge")
    body = sample_body("fintoc", event_id=quiet, now=time.time())
    assert gateway.post("fintoc", body, gateway.signed("fintoc", body)).status_code == 200
    assert published(quiet) == []
    caplog.set_level("DEBUG", logger="webhook_bridge")
    body = sample_body("fintoc", event_id=loud, now=time.time())
    assert gateway.post("fintoc", body, gateway.signed("fintoc", body)).status_code == 200
    [line] = published(loud)
    assert line["source"] == "fintoc" and line["topic"] == gateway.topic("fintoc")
