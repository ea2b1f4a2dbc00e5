"""The sink's HTTP client against a real uvicorn server on a free loopback port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from consumers.sinks.http_client import (
    ConnectError,
    HttpClient,
    ProtocolError,
    RequestTimeout,
    Response,
)
from deploy.broker import free_port

BIG = 3 * 1024 * 1024


class Server:
    """A raw ASGI app whose behaviour is chosen by the request path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.peers: list[tuple[str, int]] = []  # client address of every request
        self.bodies: list[bytes] = []
        self.headers: list[dict[bytes, bytes]] = []
        config = uvicorn.Config(
            self.app,
            interface="asgi3",  # a bound method: uvicorn would guess ASGI2
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.peers.append(tuple(scope["client"]))
        self.bodies.append(body)
        self.headers.append(dict(scope["headers"]))
        path = scope["path"]
        if path == "/hang":
            await asyncio.sleep(3600)
        headers: list[tuple[bytes, bytes]] = [(b"x-echo-len", str(len(body)).encode())]
        if path == "/chunked":  # no content-length, two body messages: chunked encoding
            await send({"type": "http.response.start", "status": 201, "headers": headers})
            await send({"type": "http.response.body", "body": b"abc", "more_body": True})
            await send({"type": "http.response.body", "body": b"def"})
            return
        if path == "/close":
            headers.append((b"connection", b"close"))
        payload = b"z" * BIG if path == "/big" else b"hello"
        if path == "/drop":  # headers promise 100 bytes, then the connection is dropped
            headers.append((b"content-length", b"100"))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            raise RuntimeError("drop")
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


def run(client: HttpClient, *requests: tuple[str, bytes]) -> list[Response | BaseException]:
    async def go() -> list[Response | BaseException]:
        out: list[Response | BaseException] = []
        for path, body in requests:
            try:
                out.append(await client.request("POST", path, [("x-test", "1")], body))
            except Exception as exc:
                out.append(exc)
        await client.close()
        return out

    return asyncio.run(go())


def test_keep_alive_reuses_one_connection(server: Server) -> None:
    before = len(server.peers)
    results = run(HttpClient(server.url()), *[("/ok", b"payload")] * 5)
    assert all(isinstance(r, Response) and r.status == 200 and r.body == b"hello" for r in results)
    peers = server.peers[before:]
    assert len(peers) == 5 and len(set(peers)) == 1
    assert server.bodies[-1] == b"payload"
    assert server.headers[-1][b"x-test"] == b"1"
    assert server.headers[-1][b"host"] == f"127.0.0.1:{server.port}".encode()


def test_chunked_response_then_reuse(server: Server) -> None:
    before = len(server.peers)
    results = run(HttpClient(server.url()), ("/chunked", b""), ("/ok", b"x"))
    first, second = results
    assert isinstance(first, Response) and first.status == 201 and first.body == b"abcdef"
    assert first.header("X-Echo-Len") == "0"
    assert isinstance(second, Response) and second.status == 200
    assert len(set(server.peers[before:])) == 1


def test_connection_close_retires_the_connection(server: Server) -> None:
    before = len(server.peers)
    results = run(HttpClient(server.url()), ("/close", b""), ("/ok", b""), ("/ok", b""))
    assert [r.status for r in results if isinstance(r, Response)] == [200, 200, 200]
    peers = server.peers[before:]
    assert peers[0] != peers[1] and peers[1] == peers[2]


def test_large_request_and_response_bodies(server: Server) -> None:
    body = bytes(range(256)) * (BIG // 256)
    client = HttpClient(server.url(), max_body=1000)
    big, after = run(client, ("/big", body), ("/ok", b""))
    assert isinstance(big, Response) and big.status == 200
    assert big.body == b"z" * 1000  # read to the end, first max_body bytes kept
    assert server.bodies[-2] == body
    assert isinstance(after, Response) and after.body == b"hello"


def test_hang_times_out_and_the_pool_recovers(server: Server) -> None:
    client = HttpClient(server.url(), timeout_s=0.3)
    hang, ok = run(client, ("/hang", b""), ("/ok", b""))
    assert isinstance(hang, RequestTimeout)
    assert isinstance(ok, Response) and ok.status == 200


def test_dropped_mid_response_is_a_protocol_error(server: Server) -> None:
    dropped, ok = run(HttpClient(server.url()), ("/drop", b""), ("/ok", b""))
    assert isinstance(dropped, ProtocolError)
    assert isinstance(ok, Response) and ok.status == 200


def test_connection_refused() -> None:
    (result,) = run(HttpClient(f"http://127.0.0.1:{free_port()}/"), ("/", b""))
    assert isinstance(result, ConnectError)


def test_connect_timeout() -> None:
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
        client = HttpClient(f"http://127.0.0.1:{port}/", connect_timeout_s=0.2, timeout_s=30)
        (result,) = run(client, ("/", b""))
        assert isinstance(result, RequestTimeout)
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_pool_bounds_connections_and_queues_the_rest(server: Server) -> None:
    client = HttpClient(server.url(), max_connections=2)
    before = len(server.peers)

    async def go() -> list[Response]:
        out = await asyncio.gather(*(client.request("POST", "/ok", [], b"") for _ in range(20)))
        await client.close()
        return out

    results = asyncio.run(go())
    assert all(r.status == 200 for r in results)
    assert len(set(server.peers[before:])) <= 2


def test_idle_connection_closed_by_server_is_replaced(server: Server) -> None:
    """The server closes idle keep-alive connections; the next request opens a new one."""
    client = HttpClient(server.url())

    async def go() -> list[Response]:
        first = await client.request("POST", "/ok", [], b"")
        for conn in client._idle:  # what an idle timeout on the server's side does
            assert conn.transport is not None
            conn.transport.close()
        await asyncio.sleep(0.1)
        second = await client.request("POST", "/ok", [], b"")
        await client.close()
        return [first, second]

    assert [r.status for r in asyncio.run(go())] == [200, 200]


def test_header_injection_is_refused(server: Server) -> None:
    async def go() -> None:
        client = HttpClient(server.url())
        try:
            await client.request("POST", "/ok", [("x-evil", "a\r\nx-injected: 1")], b"")
        finally:
            await client.close()

    with pytest.raises(ProtocolError):
        asyncio.run(go())


def test_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpClient("ftp://example.com/")


def test_reused_connection_closed_without_answer_is_retried_once() -> None:
    """The server's idle-close race: the request on a reused connection gets EOF, no bytes."""
    seen: list[int] = []

    async def go() -> list[int]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = len(seen)
            seen.append(conn)
            served = 0
            while await reader.readuntil(b"\r\n\r\n"):
                if conn == 0 and served == 1:
                    break  # second request on the first connection: close, answer nothing
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                served += 1
            writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        client = HttpClient(f"http://127.0.0.1:{port}/")
        statuses = [(await client.request("GET", "/", [])).status for _ in range(2)]
        await client.close()
        srv.close()
        return statuses

    assert asyncio.run(go()) == [200, 200]
    assert seen == [0, 1]
