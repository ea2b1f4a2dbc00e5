"""The request-head limits (gateway/connections.py), with raw sockets against the gateway
served by uvicorn exactly as `webhook-bridge gateway` serves it (gateway.server)."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from deploy.samples import sample_body
from deploy.topics import ensure_topics
from gateway.app import create_app
from gateway.sources import verify_context
from gateway.verify import sign_request
from schemas.config import Settings
from schemas.topics import implied_topics
from tests.conftest import KafkaCluster
from tests.support import gateway_toml, serve, settings_from_toml

pytestmark = pytest.mark.kafka

LIMITS = """
[gateway]
header_timeout_s = 1.0
body_timeout_s = 4.0
max_header_bytes = 4096
max_headers = 20
"""


@dataclass
class Server:
    host: str
    port: int
    settings: Settings

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)

    def signed_post(self, body: bytes) -> bytes:
        source = self.settings.sources["jiko"]
        headers = sign_request(
            source.scheme, verify_context(self.settings, source.name), body, time.time()
        )
        lines = [
            "POST /webhooks/jiko HTTP/1.1",
            "Host: gw",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture(scope="module")
def server(kafka: KafkaCluster) -> Iterator[Server]:
    settings = settings_from_toml(gateway_toml(kafka.bootstrap, f"conn-{time.time_ns()}") + LIMITS)
    ensure_topics(settings.admin_config(), implied_topics(settings))
    with serve(create_app(settings), settings) as url:
        host, port = url.removeprefix("http://").split(":")
        yield Server(host, int(port), settings)


def read_until_closed(sock: socket.socket, timeout_s: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and how long that took."""
    started = time.monotonic()
    sock.settimeout(timeout_s)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def send_until_answered(sock: socket.socket, chunk: bytes, times: int, pause_s: float) -> int:
    """Send `chunk` up to `times` times, stopping once the server answers; bytes sent."""
    sent = 0
    for _ in range(times):
        if select.select([sock], [], [], 0)[0]:
            break
        try:
            sock.sendall(chunk)
        except OSError:
            break
        sent += len(chunk)
        time.sleep(pause_s)
    return sent


def read_response(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_an_idle_connection_is_closed_after_header_timeout(server: Server) -> None:
    with server.connect() as sock:
        received, took = read_until_closed(sock)
    assert received == b""  # nothing was asked, nothing is answered
    assert 0.8 < took < 3.0


def assert_a_trickled_head_is_answered_408(sock: socket.socket) -> None:
    """A head trickled at a byte every 0.1 s (5 s for all) is answered 408 and closed
    within the 1 s head deadline (and some slack)."""
    started = time.monotonic()
    sock.sendall(b"POST /webhooks/jiko HTTP/1.1\r\nHost: gw\r\n")
    send_until_answered(sock, b"X", 50, 0.1)
    received, _ = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3.0


def test_a_trickled_head_is_answered_408_and_closed(server: Server) -> None:
    with server.connect() as sock:
        assert_a_trickled_head_is_answered_408(sock)


def test_each_request_on_a_kept_alive_connection_gets_the_full_head_time(server: Server) -> None:
    with server.connect() as sock:
        for _ in range(3):  # 3 requests 0.7 s apart: 2.1 s on one connection
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.7)
        received, took = read_until_closed(sock)
    assert received == b"" and took < 1.5  # then idle: closed


@pytest.mark.parametrize("signed", [True, False], ids=["accepted", "refused-401"])
def test_after_a_webhook_answer_the_next_head_has_the_head_deadline(
    server: Server, signed: bool
) -> None:
    """Both ways the direct path answers (after the publish, or at once from inside the
    parser's callback) leave the next request's head under the same deadline."""
    body = sample_body("jiko", event_id=f"next-head-{time.time_ns()}", now=time.time())
    request = server.signed_post(body) + body
    if not signed:
        request = request.replace(b"x-jiko-signature: ", b"x-jiko-signature: A", 1)
    with server.connect() as sock:
        sock.sendall(request)
        head = read_response(sock)
        assert head.startswith(b"HTTP/1.1 202 " if signed else b"HTTP/1.1 401 "), head
        assert_a_trickled_head_is_answered_408(sock)


def test_after_an_answer_an_idle_connection_closes_at_the_keep_alive_limit(
    kafka: KafkaCluster,
) -> None:
    """After an answer, a connection that sends nothing is closed at uvicorn's
    `timeout_keep_alive` (1 s here), before the head deadline (2.5 s); one that has begun
    its next head is held to the head deadline instead, and answered 408. (One deadline
    clock per connection keeps both limits: gateway/connections.py.)"""
    settings = settings_from_toml(
        gateway_toml(kafka.bootstrap, f"keepalive-{time.time_ns()}")
        + "[gateway]\nheader_timeout_s = 2.5\n"
    )
    ensure_topics(settings.admin_config(), implied_topics(settings))
    with serve(create_app(settings), settings, timeout_keep_alive=1) as url:
        host, port = url.removeprefix("http://").split(":")
        server = Server(host, int(port), settings)
        body = sample_body("jiko", event_id=f"keep-alive-{time.time_ns()}", now=time.time())
        with server.connect() as sock:
            sock.sendall(server.signed_post(body) + body)
            assert read_response(sock).startswith(b"HTTP/1.1 202 ")
            received, took = read_until_closed(sock)
        assert received == b"" and 0.8 < took < 2.0  # the keep-alive limit, not the head's
        with server.connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next head begins, and stalls
            received, took = read_until_closed(sock)
        assert received.startswith(b"HTTP/1.1 408 ") and 2.0 < took < 4.0


def test_a_slow_body_is_not_cut_by_the_head_deadline(server: Server) -> None:
    body = sample_body("jiko", event_id=f"slow-body-{time.time_ns()}", now=time.time())
    with server.connect() as sock:
        sock.sendall(server.signed_post(body) + body[:10])
        time.sleep(1.5)  # past header_timeout_s, within body_timeout_s
        sock.sendall(body[10:])
        head = read_response(sock)
    assert head.startswith(b"HTTP/1.1 202 ")


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n"
        + b"".join(b"X-N%d: 1\r\n" % n for n in range(1000))
        + b"\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" + b"X-Few: 1\r\n" * 25 + b"\r\n",
        b"GET /healthz?" + b"q" * 5000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n",
    ],
    ids=["64KB-header", "1000-headers", "21-plus-headers", "long-url"],
)
def test_a_head_over_the_limits_is_answered_431(server: Server, head: bytes) -> None:
    with server.connect() as sock:
        with contextlib.suppress(OSError):  # closed while we still sent: answered already
            sock.sendall(head)
        received, _ = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 431 ")


def test_a_header_growing_without_end_is_cut_at_the_limit(server: Server) -> None:
    """Bytes that never finish a header are not buffered: 431 once past max_header_bytes."""
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Endless: ")
        sent = send_until_answered(sock, b"b" * 1024, 1000, 0.001)  # up to 1 MB offered
        received, _ = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 431 ")
    assert sent < 1000 * 1024


def test_heads_within_the_limits_are_served(server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Fair: " + b"a" * 3000 + b"\r\n"
    head += b"X-Few: 1\r\n" * 15 + b"\r\n"
    with server.connect() as sock:
        sock.sendall(head)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
    body = sample_body("jiko", event_id=f"conn-ok-{time.time_ns()}", now=time.time())
    with server.connect() as sock:
        sock.sendall(server.signed_post(body) + body)
        assert read_response(sock).startswith(b"HTTP/1.1 202 ")
