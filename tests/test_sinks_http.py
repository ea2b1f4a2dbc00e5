"""The HTTP sink's connection behaviour against real local servers (uvicorn, raw asyncio).

The receiver's behaviour is chosen by the event id's prefix (``big-1`` answers 3 MB), so
one sink (one URL) meets every case. TLS tests make their own CA in `tmp_path`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consumers.sinks import DeliveryResult, Event, SinkContext
from consumers.sinks.http import HttpSink
from deploy.broker import free_port
from tests.receiver_support import SECRET, SECRET_ENV, envelope, expected_signature, make_settings

BIG = 3 * 1024 * 1024


class Receiver:
    """uvicorn on a free loopback port; records every request; behaves by event-id prefix."""

    def __init__(self, *, keep_alive_s: int = 5, tls: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self.peers: list[tuple[str, int]] = []  # client address of every request
        self.bodies: list[bytes] = []
        self.headers: list[dict[bytes, bytes]] = []
        self.paths: list[str] = []
        config = uvicorn.Config(
            self.app,
            interface="asgi3",  # a bound method: uvicorn would guess ASGI2
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=keep_alive_s,
            timeout_graceful_shutdown=1,
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def url(self, path: str = "/events") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = dict(scope["headers"])
        self.peers.append(tuple(scope["client"]))
        self.bodies.append(body)
        self.headers.append(headers)
        self.paths.append(scope["path"])
        action = headers.get(b"webhook-id", b"ok").decode().split("-")[0]
        start: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": []}
        if action == "hang":
            await asyncio.sleep(3600)
        if action == "chunked":  # no content-length, two body messages: chunked encoding
            await send(start | {"status": 201})
            await send({"type": "http.response.body", "body": b"abc", "more_body": True})
            await send({"type": "http.response.body", "body": b"def"})
            return
        if action == "drop":  # headers promise 100 bytes, then the connection is dropped
            await send(start | {"headers": [(b"content-length", b"100")]})
            raise RuntimeError("drop")
        payload = b"z" * BIG if action == "big" else b"hello"
        extra = {
            "close": [(b"connection", b"close")],
            "redirect": [(b"location", b"/elsewhere")],
            "cookie": [(b"set-cookie", b"session=abc; Path=/")],
        }.get(action, [])
        status = 302 if action == "redirect" else 200
        length = [(b"content-length", str(len(payload)).encode())]
        await send(start | {"status": status, "headers": length + extra})
        await send({"type": "http.response.body", "body": payload})

    def __enter__(self) -> Receiver:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


SinkFactory = Callable[..., HttpSink]


@pytest.fixture
def sink_factory() -> SinkFactory:
    """HttpSink for `url` with extra options (e.g. ``timeout_s=0.3``, ``ca_file=...``)."""

    def make(url: str, **options: object) -> HttpSink:
        settings = make_settings(
            "127.0.0.1:1",
            "unit",
            {"h": {"type": "http", "url": url, "secret": SECRET_ENV, **options}},
        )
        return HttpSink(settings.sinks["h"], SinkContext(settings, {SECRET_ENV: SECRET}))

    return make


def event(event_id: str, body: bytes | None = None) -> Event:
    env = envelope(event_id, "K")
    if body is not None:
        env = dataclasses.replace(env, body=body)
    return Event(env, b"", b"K", [], "t", 0, 0)


def deliver(sink: HttpSink, *event_ids: str, body: bytes | None = None) -> list[DeliveryResult]:
    """Deliver one event per id, one after the other, then close the sink."""

    async def go() -> list[DeliveryResult]:
        try:
            return [await sink.deliver(event(i, body)) for i in event_ids]
        finally:
            await sink.close()

    return asyncio.run(go())


def outcomes(results: list[DeliveryResult]) -> list[tuple[str, int | None]]:
    return [(r.outcome, r.status) for r in results]


# ------------------------------------------------------------------ connections


def test_keep_alive_reuses_one_connection(receiver: Receiver, sink_factory: SinkFactory) -> None:
    before = len(receiver.peers)
    results = deliver(sink_factory(receiver.url()), *(f"ok-{i}" for i in range(5)))
    assert outcomes(results) == [("ok", 200)] * 5
    peers = receiver.peers[before:]
    assert len(peers) == 5 and len(set(peers)) == 1
    headers = receiver.headers[-1]
    assert headers[b"host"] == f"127.0.0.1:{receiver.port}".encode()
    assert headers[b"user-agent"] == b"webhook-bridge"
    assert headers[b"webhook-signature"].decode() == expected_signature(
        SECRET, "ok-4", headers[b"webhook-timestamp"].decode(), receiver.bodies[-1]
    )


def test_chunked_answer_then_reuse(receiver: Receiver, sink_factory: SinkFactory) -> None:
    before = len(receiver.peers)
    results = deliver(sink_factory(receiver.url()), "chunked-1", "ok-1")
    assert outcomes(results) == [("ok", 201), ("ok", 200)]
    assert len(set(receiver.peers[before:])) == 1


def test_connection_close_retires_the_connection(
    receiver: Receiver, sink_factory: SinkFactory
) -> None:
    before = len(receiver.peers)
    results = deliver(sink_factory(receiver.url()), "close-1", "ok-1", "ok-2")
    assert outcomes(results) == [("ok", 200)] * 3
    peers = receiver.peers[before:]
    assert peers[0] != peers[1] and peers[1] == peers[2]


def test_large_request_body_arrives_whole(receiver: Receiver, sink_factory: SinkFactory) -> None:
    body = bytes(range(256)) * (BIG // 256)
    (result,) = deliver(sink_factory(receiver.url()), "ok-big-request", body=body)
    assert result.outcome == "ok"
    assert receiver.bodies[-1] == body


def test_large_answer_is_not_read_but_drops_the_connection(
    receiver: Receiver, sink_factory: SinkFactory
) -> None:
    """The answer's body is read up to DRAIN_BYTES only: 3 MB costs a connection, not 3 MB."""
    before = len(receiver.peers)
    results = deliver(sink_factory(receiver.url()), "big-1", "ok-1", "ok-2")
    assert outcomes(results) == [("ok", 200)] * 3
    peers = receiver.peers[before:]
    assert peers[0] != peers[1] and peers[1] == peers[2]


def test_connections_are_bounded_by_max_connections(
    receiver: Receiver, sink_factory: SinkFactory
) -> None:
    sink = sink_factory(receiver.url(), max_connections=2)
    before = len(receiver.peers)

    async def go() -> list[DeliveryResult]:
        try:
            return await asyncio.gather(*(sink.deliver(event(f"ok-{i}")) for i in range(20)))
        finally:
            await sink.close()

    assert outcomes(asyncio.run(go())) == [("ok", 200)] * 20
    assert len(set(receiver.peers[before:])) <= 2


def test_idle_connection_closed_by_the_receiver_is_replaced(sink_factory: SinkFactory) -> None:
    with Receiver(keep_alive_s=1) as receiver:
        sink = sink_factory(receiver.url())

        async def go() -> list[DeliveryResult]:
            try:
                first = await sink.deliver(event("ok-1"))
                await asyncio.sleep(1.5)  # the receiver closes the idle connection
                return [first, await sink.deliver(event("ok-2"))]
            finally:
                await sink.close()

        assert outcomes(asyncio.run(go())) == [("ok", 200)] * 2
        assert len(set(receiver.peers)) == 2


def test_reused_connection_closed_without_answer_is_retried_once(
    sink_factory: SinkFactory,
) -> None:
    """The idle-close race: a request on a reused connection gets EOF, no answer byte."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = len(seen)
        seen.append(conn)
        served = 0
        try:
            while await _read_request(reader):
                if conn == 0 and served == 1:
                    break  # second request on the first connection: close, answer nothing
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                served += 1
        finally:
            writer.close()

    assert outcomes(_deliver_to_raw_server(handle, sink_factory, 2)) == [("ok", 200)] * 2
    assert seen == [0, 1]


def test_connection_closed_without_answer_twice_is_a_retry(sink_factory: SinkFactory) -> None:
    attempts: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(await _read_request(reader))
        writer.close()

    (result,) = _deliver_to_raw_server(handle, sink_factory, 1)
    assert (result.outcome, result.status) == ("retry", None)
    assert result.reason == "network: ServerDisconnectedError"
    assert len(attempts) == 2  # the first try and one more, not a loop


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and content-length body); b"" at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


def _deliver_to_raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    sink_factory: SinkFactory,
    count: int,
) -> list[DeliveryResult]:
    async def go() -> list[DeliveryResult]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sink = sink_factory(f"http://127.0.0.1:{port}/events")
        try:
            return [await sink.deliver(event(f"ok-{i}")) for i in range(count)]
        finally:
            await sink.close()
            server.close()

    return asyncio.run(go())


# ------------------------------------------------------------------ failures


def test_hang_times_out_and_the_pool_recovers(
    receiver: Receiver, sink_factory: SinkFactory
) -> None:
    hang, ok = deliver(sink_factory(receiver.url(), timeout_s=0.3), "hang-1", "ok-1")
    assert (hang.outcome, hang.status, hang.reason) == ("retry", None, "timeout")
    assert (ok.outcome, ok.status) == ("ok", 200)


def test_answer_cut_short_is_a_retry(receiver: Receiver, sink_factory: SinkFactory) -> None:
    dropped, ok = deliver(sink_factory(receiver.url()), "drop-1", "ok-1")
    assert (dropped.outcome, dropped.status) == ("retry", None)
    assert dropped.reason.startswith("network: ")
    assert (ok.outcome, ok.status) == ("ok", 200)


def test_connection_refused_is_a_retry(sink_factory: SinkFactory) -> None:
    (result,) = deliver(sink_factory(f"http://127.0.0.1:{free_port()}/events"), "ok-1")
    assert (result.outcome, result.reason) == ("retry", "network: ClientConnectorError")


def test_connect_timeout_is_a_retry(sink_factory: SinkFactory) -> None:
    """A listener whose backlog is full never completes the handshake: connect times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue (never accepted)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(listener.getsockname())
            fillers.append(s)
        port = listener.getsockname()[1]
        sink = sink_factory(f"http://127.0.0.1:{port}/", connect_timeout_s=0.2, timeout_s=30)
        started = time.monotonic()
        (result,) = deliver(sink, "ok-1")
        assert (result.outcome, result.reason) == ("retry", "timeout")
        assert time.monotonic() - started < 10
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_redirects_are_not_followed(receiver: Receiver, sink_factory: SinkFactory) -> None:
    before = len(receiver.paths)
    (result,) = deliver(sink_factory(receiver.url()), "redirect-1")
    assert (result.outcome, result.status) == ("reject", 302)
    assert receiver.paths[before:] == ["/events"]


def test_cookies_are_not_kept(receiver: Receiver, sink_factory: SinkFactory) -> None:
    results = deliver(sink_factory(receiver.url()), "cookie-1", "ok-1")
    assert outcomes(results) == [("ok", 200)] * 2
    assert b"cookie" not in receiver.headers[-1]


def test_header_injection_is_a_rejection(receiver: Receiver, sink_factory: SinkFactory) -> None:
    before = len(receiver.peers)
    (result,) = deliver(sink_factory(receiver.url()), "ok-1\r\nx-injected: 1")
    assert result.outcome == "reject" and result.reason.startswith("not sendable")
    assert len(receiver.peers) == before


def test_proxy_environment_is_ignored_unless_enabled(
    receiver: Receiver, sink_factory: SinkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY reroutes deliveries only with ``proxy_from_env = true``."""
    proxied: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await _read_request(reader):
            proxied.append(request.split(b"\r\n", 1)[0])
            writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        writer.close()

    async def go(**options: object) -> DeliveryResult:
        server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        sink = sink_factory(receiver.url(), **options)
        try:
            return await sink.deliver(event("ok-1"))
        finally:
            await sink.close()
            server.close()

    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert asyncio.run(go()).status == 200  # straight to the receiver
    assert proxied == []
    assert asyncio.run(go(proxy_from_env=True)).status == 204  # through the "proxy"
    assert proxied == [f"POST {receiver.url()} HTTP/1.1".encode()]


# ------------------------------------------------------------------ TLS


@dataclasses.dataclass
class Pki:
    """A CA (in `ca_file`) and a loopback server certificate it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(folder: Path, hosts: tuple[str, ...] = ("127.0.0.1",)) -> Pki:
    """A fresh CA and a server certificate for `hosts` (IP addresses or DNS names)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("webhook-bridge test CA"))
        .issuer_name(_name("webhook-bridge test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


def test_https_receiver_trusted_through_ca_file(tmp_path: Path, sink_factory: SinkFactory) -> None:
    pki = make_pki(tmp_path / "pki")
    with Receiver(tls=(pki.cert_file, pki.key_file)) as receiver:
        sink = sink_factory(receiver.url(), ca_file=str(pki.ca_file))
        results = deliver(sink, "ok-1", "ok-2")
        assert outcomes(results) == [("ok", 200)] * 2
        assert len(set(receiver.peers)) == 1  # keep-alive over TLS too
        assert receiver.bodies[-1] == event("ok-2").envelope.body


@pytest.mark.parametrize(
    ("trust", "hosts", "problem"),
    [
        ("certifi", ("127.0.0.1",), "unable to get local issuer certificate"),
        ("other CA", ("127.0.0.1",), "unable to get local issuer certificate"),
        ("own CA", ("receiver.example",), "IP address mismatch"),
    ],
)
def test_untrusted_certificate_is_a_failed_delivery(
    tmp_path: Path, sink_factory: SinkFactory, trust: str, hosts: tuple[str, ...], problem: str
) -> None:
    """Never delivered unverified: a retry (the breaker opens, then the DLQ), not a reject,
    because a certificate is usually fixed by the receiver's operator, not by the event."""
    pki = make_pki(tmp_path / "pki", hosts)
    options = {
        "certifi": {},
        "other CA": {"ca_file": str(make_pki(tmp_path / "other").ca_file)},
        "own CA": {"ca_file": str(pki.ca_file)},
    }[trust]
    with Receiver(tls=(pki.cert_file, pki.key_file)) as receiver:
        (result,) = deliver(sink_factory(receiver.url(), **options), "ok-1")
        assert (result.outcome, result.status) == ("retry", None)
        assert result.reason.startswith("tls: ") and problem in result.reason
        assert receiver.peers == []
