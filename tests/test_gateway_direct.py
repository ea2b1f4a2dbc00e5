"""The direct path (gateway.connections): the connection serves a plain webhook POST itself,
everything else goes through uvicorn's ASGI cycle, and the two never answer out of order.

The gateway runs under its own server configuration (gateway.server) on a real uvicorn,
with Apache Kafka behind it. The e2e tests (test_gateway_e2e.py) run every scenario on both
paths; these are about the split itself."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.samples import sample_body
from deploy.topics import ensure_topics
from gateway.app import GatewayApp, create_app
from gateway.sources import verify_context
from gateway.verify import sign_request
from schemas.config import Settings
from schemas.serde import EnvelopeDeserializer
from schemas.topics import implied_topics, names
from tests.conftest import KafkaCluster
from tests.support import gateway_toml, read_topic, serve, settings_from_toml

pytestmark = pytest.mark.kafka


@dataclass
class Server:
    url: str
    settings: Settings
    bootstrap: str

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)

    def request(self, body: bytes, request_id: str, target: str = "/webhooks/jiko") -> bytes:
        """One signed Jiko POST as raw bytes."""
        source = self.settings.sources["jiko"]
        signed = sign_request(
            source.scheme, verify_context(self.settings, source.name), body, time.time()
        )
        lines = [
            f"POST {target} HTTP/1.1",
            "Host: gw",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"X-Request-Id: {request_id}",
            *(f"{k}: {v}" for k, v in signed.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def server(kafka: KafkaCluster) -> Iterator[Server]:
    settings = settings_from_toml(gateway_toml(kafka.bootstrap, f"direct-{time.time_ns()}"))
    ensure_topics(settings.admin_config(), implied_topics(settings))
    with serve(create_app(settings), settings) as url:
        yield Server(url, settings, kafka.bootstrap)


def body(n: int) -> bytes:
    """A unique Jiko sample (the gateway accepts it: 2xx, published to the raw topic)."""
    return sample_body("jiko", event_id=f"direct-{n}-{time.time_ns()}", now=time.time())


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`count` HTTP/1.1 answers with Content-Length bodies, in the order they came."""
    buffer = b""
    answers: list[tuple[int, dict[str, str], bytes]] = []
    sock.settimeout(10)
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(answers)} answers"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers["content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "closed mid-body"
            buffer += chunk
        answers.append((int(status_line.split()[1]), headers, buffer[:length]))
        buffer = buffer[length:]
    return answers


def test_a_plain_webhook_post_never_reaches_the_asgi_app(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the ASGI app's entry broken (what uvicorn calls for every request it serves
    itself; the compiled endpoint's own methods cannot be patched), a plain POST is still
    accepted and published (the connection served it), while the same POST with a query
    string, which takes the ASGI path, meets the broken entry."""

    async def broken(*_args: Any) -> None:
        raise RuntimeError("the ASGI entry was called")

    monkeypatch.setattr(GatewayApp, "__call__", broken)
    plain, queried = body(1), body(2)
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(server.request(plain, "plain"))
        [(status, headers, answer)] = read_answers(sock, 1)
    assert 200 <= status < 300, answer
    assert headers["x-request-id"] == "plain"
    assert headers["server"] == "uvicorn" and "date" in headers  # uvicorn's default headers
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(server.request(queried, "queried", "/webhooks/jiko?from=test"))
        [(status, _, _)] = read_answers(sock, 1)
    assert status == 500  # uvicorn's answer to an app that raised

    records = read_topic(server.bootstrap, names(server.settings).raw("jiko"), idle_s=2.0)
    deserialize = EnvelopeDeserializer()
    ids = [deserialize(r.value()).request_id for r in records]
    assert [i for i in ids if i in ("plain", "queried")] == ["plain"]


def test_pipelined_requests_are_answered_in_order_across_both_paths(server: Server) -> None:
    """Five requests in one write: direct, ASGI (query string), direct, a bad signature,
    direct. Each is answered, in the order sent, with its own request id."""
    requests = [
        server.request(body(10), "r0"),
        server.request(body(11), "r1", "/webhooks/jiko?x=1"),
        server.request(body(12), "r2"),
        re.sub(rb"(?i)(x-jiko-signature: )", rb"\1A", server.request(body(13), "r3")),
        server.request(body(14), "r4"),
    ]
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"".join(requests))
        answers = read_answers(sock, len(requests))
    assert [h["x-request-id"] for _, h, _ in answers] == ["r0", "r1", "r2", "r3", "r4"]
    ok = answers[0][0]
    assert 200 <= ok < 300
    assert [status for status, _, _ in answers] == [ok, ok, ok, 401, ok]


def test_a_body_in_pieces_is_served_once_complete(server: Server) -> None:
    payload = body(20)
    raw = server.request(payload, "pieces")
    head_end = raw.index(b"\r\n\r\n") + 4
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(raw[: head_end + 5])
        time.sleep(0.2)
        sock.sendall(raw[head_end + 5 : head_end + 30])
        time.sleep(0.2)
        sock.sendall(raw[head_end + 30 :])
        [(status, headers, answer)] = read_answers(sock, 1)
    assert 200 <= status < 300, answer
    assert headers["x-request-id"] == "pieces"


def test_keep_alive_serves_many_and_connection_close_is_honoured(server: Server) -> None:
    with socket.create_connection(server.address, timeout=10) as sock:
        for n in range(3):
            sock.sendall(server.request(body(30 + n), f"k{n}"))
            [(status, headers, _)] = read_answers(sock, 1)
            assert 200 <= status < 300 and "connection" not in headers
        closing = server.request(body(33), "last").replace(
            b"Host: gw\r\n", b"Host: gw\r\nConnection: close\r\n"
        )
        sock.sendall(closing)
        [(status, headers, _)] = read_answers(sock, 1)
        assert 200 <= status < 300 and headers["connection"] == "close"
        assert sock.recv(1) == b""  # and closed


def test_a_client_gone_mid_body_is_not_counted_and_leaves_nothing_in_flight(
    server: Server,
) -> None:
    def sample(name: str, **labels: str) -> float:
        """The sum of a metric's samples with these labels, from a real scrape."""
        total = 0.0
        for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
            for s in family.samples:
                if s.name == name and labels.items() <= s.labels.items():
                    total += s.value
        return total

    def jiko_requests() -> float:
        return sample("webhook_bridge_gateway_requests_total", source="jiko")

    def in_flight() -> float:
        return sample("webhook_bridge_gateway_in_flight_requests")

    before = jiko_requests()
    raw = server.request(body(40), "gone")
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(raw[:-10])  # all but the last ten bytes of the body
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while in_flight() != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight() == 0
    assert jiko_requests() == before


def test_request_ids_are_made_when_missing_or_unusable_and_never_repeat(server: Server) -> None:
    ids = []
    with socket.create_connection(server.address, timeout=10) as sock:
        for n in range(50):
            raw = server.request(body(50 + n), "x" if n % 2 else "bad id with spaces")
            if n % 2:
                raw = re.sub(rb"X-Request-Id: x\r\n", b"", raw)  # none supplied
            sock.sendall(raw)
            [(status, headers, answer)] = read_answers(sock, 1)
            assert 200 <= status < 300, answer
            ids.append(headers["x-request-id"])
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)
