"""The HTTP connection layer: uvicorn's httptools protocol with limits on the request head,
and the webhook POST served by the connection itself.

uvicorn closes a keep-alive connection only after a response, and llhttp limits no
header size: a connection that never sends a request, or trickles its headers, stays
open, and a head of any size is parsed and buffered. `guarded_protocol` adds:

- ``gateway.header_timeout_s``: the whole request head (request line and headers) must
  arrive within this time from the connection's start, or from the end of the previous
  response; otherwise the connection is closed (with a 408 if part of a head came).
  Bodies have their own limit (``body_timeout_s``, answered by the app).
- ``gateway.max_header_bytes`` and ``gateway.max_headers``: a head larger than this, or
  with more header fields, is answered 431 and the connection closed, without reading on.

The direct path. uvicorn serves a request by building an ASGI scope and a cycle object,
starting a task for it, handing the body over as messages and writing the answer in two
writes (head, then body). For the request this gateway exists for, skipping that took a
ninth to a third off the CPU of the whole request (docs/benchmarks.md). So a
``POST /webhooks/{source}`` of a known source, with a Content-Length within the source's
limit, arriving on a connection with no request in flight, is served here: the body is
collected as the parser hands it over, the endpoint's own steps run when it is complete
(`WebhookEndpoint.accept`), the acknowledgement answers it from a callback of the publish
future (`settle`), and the answer leaves in one write, with uvicorn's default headers.
Everything else (other paths and methods, unknown sources, chunked bodies,
``Expect: 100-continue``, a query string, a request pipelined behind another, a mounted
root path) takes uvicorn's ASGI path to the same endpoint, which answers the same, so
behaviour does not depend on the path taken. A body that does not arrive within
``gateway.body_timeout_s`` is answered 408, as on the ASGI path.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.endpoint import CLOSE, Pending, Result, WebhookEndpoint, header_map
from schemas.config import GatewaySettings, SourceSettings


class PublishCancelled(Exception):
    """A publish future was cancelled (nothing does so): answered as a bug, 500."""


class _HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing a head over the limits."""


def _answer(status: int, reason: str, error: str) -> bytes:
    body = b'{"error":"' + error.encode() + b'"}'
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


HEAD_TOO_LARGE = _answer(431, "Request Header Fields Too Large", "request head too large")
HEAD_TOO_SLOW = _answer(408, "Request Timeout", "request head not received in time")
LINGER_S = 2.0  # after refusing a head: how long its remaining bytes are read and dropped


WEBHOOKS = "/webhooks/"
CLOSE_HEADER = (b"connection", b"close")


class _DefaultLines:
    """uvicorn's default response headers (server, date) as header lines. uvicorn replaces
    its list once a second (a new date); the lines are joined again only then, not for
    every answer."""

    headers: list[tuple[bytes, bytes]] | None = None  # held: an identity check is sound
    lines = b""

    @classmethod
    def of(cls, default_headers: list[tuple[bytes, bytes]]) -> bytes:
        if default_headers is not cls.headers:
            cls.lines = b"".join(name + b": " + value + b"\r\n" for name, value in default_headers)
            cls.headers = default_headers
        return cls.lines


class _NoEvent:
    """uvicorn's `connection_lost` sets its cycle's event; a direct request has none."""

    @staticmethod
    def set() -> None:
        return None


class _Direct:
    """A webhook request served by the connection (what uvicorn's code, which keeps it in
    ``self.cycle``, reads of a cycle: `response_complete`, `keep_alive`, `disconnected`,
    `message_event`)."""

    __slots__ = (
        "body",
        "body_timer",
        "disconnected",
        "headers",
        "keep_alive",
        "request_id",
        "response_complete",
        "source",
        "started",
    )
    message_event = _NoEvent()

    def __init__(
        self, source: SourceSettings, headers: dict[str, str], request_id: str, keep_alive: bool
    ) -> None:
        self.source = source
        self.headers = headers
        self.request_id = request_id
        self.keep_alive = keep_alive
        self.started = time.perf_counter()
        self.body = bytearray()
        self.body_timer: asyncio.TimerHandle | None = None
        self.response_complete = False
        self.disconnected = False


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a request-head deadline and size limits (class attributes)."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 16_384
    max_headers: int = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # the next bytes belong to a request head
        self._head_bytes = 0  # bytes received since that head began
        self._head_size = 0  # request line + header fields parsed so far
        self._head_fields = 0
        # One deadline clock per connection (`_wait_for_head`): the head's deadline and
        # uvicorn's keep-alive limit, checked by one timer that is re-armed only when it
        # fires, instead of two timers made and cancelled for every request.
        self._timing_head = False  # the clock runs: waiting for (the rest of) a head
        self._idle_since = 0.0  # loop time the wait began
        self._answered = False  # a response went out: the keep-alive limit applies too
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._refused = False
        endpoint = getattr(self.app, "webhook", None)  # GatewayApp's; None for any other app
        self._endpoint = endpoint if isinstance(endpoint, WebhookEndpoint) else None
        self._direct: _Direct | None = None  # the direct request reading its body

    # ------------------------------------------------------------------ the deadline
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._timing_head = False
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        direct = self._direct
        if direct is not None:  # gone before its body came: nobody to answer, nothing counted
            self._direct = None
            self._stop_reading(direct)
            assert self._endpoint is not None
            self._endpoint.in_flight -= 1
        super().connection_lost(exc)

    def _wait_for_head(self) -> None:
        """Start the clock: the next head must be whole within `header_timeout_s` from now
        and, after a response, its first byte must come within uvicorn's
        `timeout_keep_alive`. A timer already armed that fires no later than that stays:
        firing early costs a check and a re-arm, a cancel and a new timer per request cost
        more."""
        self._timing_head = True
        self._idle_since = self.loop.time()
        due, timer = self._next_due(), self._deadline_timer
        if timer is not None and timer.when() > due:  # it would fire late: the first answer
            timer.cancel()  # on a connection brings the keep-alive limit forward
            timer = None
        if timer is None:
            self._deadline_timer = self.loop.call_at(due, self._check_deadlines)

    def _next_due(self) -> float:
        due = self._idle_since + self.header_timeout_s
        if self._answered and not self._head_bytes:
            due = min(due, self._idle_since + self.timeout_keep_alive)
        return due

    def _check_deadlines(self) -> None:
        self._deadline_timer = None
        if not self._timing_head or self.transport.is_closing():
            return  # a request is in hand: its answer starts the clock again
        now = self.loop.time()
        idle = self._answered and not self._head_bytes
        if idle and now >= self._idle_since + self.timeout_keep_alive:
            self.transport.close()  # idle after a response: uvicorn's keep-alive limit
            return
        if now >= self._idle_since + self.header_timeout_s:
            self._head_too_slow()
            return
        self._deadline_timer = self.loop.call_at(self._next_due(), self._check_deadlines)

    def _head_too_slow(self) -> None:
        self._timing_head = False
        if self._head_bytes:  # part of a head came: say why; an idle one just closes
            self._answer_and_close(HEAD_TOO_SLOW)
        else:
            self.transport.close()

    def on_response_complete(self) -> None:
        # uvicorn's, except that its keep-alive timer is the deadline clock's job
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # the next request is here already: its head needs no clock
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._reading_head:
            # the client may now send its next request: its head has the full time again
            self._head_bytes = 0
            self._answered = True
            self._wait_for_head()

    # ------------------------------------------------------------------ the size
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # a head still incomplete after this many bytes is too large, however it ends
        if self._reading_head and self._head_bytes > self.max_header_bytes:
            self._refuse_head()
        direct = self._direct
        if direct is not None and direct.body_timer is None:  # its body is not all here
            assert self._endpoint is not None
            direct.body_timer = self.loop.call_later(
                self._endpoint.body_timeout_s, self._body_too_slow, direct
            )

    def on_message_begin(self) -> None:
        # uvicorn's, without the ASGI scope: a direct request needs none, and
        # `_asgi_scope` makes it for any other before uvicorn's on_headers_complete reads it
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._reading_head = True
        self._head_size = 0
        self._head_fields = 0

    def _asgi_scope(self) -> None:
        """The scope uvicorn's on_message_begin would have made (same keys, same values)."""
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, with the head's size counted (one call per field, not two;
        # `_count_head` inline: this runs for every header of every request)
        self._head_fields += 1
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_size > self.max_header_bytes or self._head_fields > self.max_headers:
            self._refused = True
            raise _HeadTooLarge  # the parser stops; uvicorn calls send_400_response
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.max_header_bytes or self._head_fields > self.max_headers:
            self._refused = True
            raise _HeadTooLarge  # the parser stops; uvicorn calls send_400_response

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._timing_head = False
        if self._endpoint is None or not self._take_direct(self._endpoint):
            self._asgi_scope()
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        direct = self._direct
        if direct is not None:  # its body: no other request is parsed before it ends
            direct.body += body  # within the declared length, which is within the limit
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        # What follows on this connection is a new head: set before a direct request is
        # answered (which may happen right here), so the answer re-arms the head deadline.
        self._reading_head = True
        direct = self._direct
        if direct is not None:  # its body: no other request is parsed before it ends
            self._direct = None
            self._stop_reading(direct)
            self._serve(direct)
        else:
            super().on_message_complete()

    # ------------------------------------------------------------------ the direct path
    def _take_direct(self, endpoint: WebhookEndpoint) -> bool:
        """Serve this request here if it is a plain webhook POST (see the module's doc)."""
        parser = self.parser
        if parser.get_method() != b"POST" or self.expect_100_continue or self.root_path:
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # behind a request in flight: uvicorn queues it
        # Tested as text: `b"?" in url` makes bytes.__contains__ try the needle as an
        # integer first and format a TypeError, ten times the cost of a str test.
        url = self.url.decode("latin-1")
        if not url.startswith(WEBHOOKS) or "?" in url or "%" in url or parser.should_upgrade():
            return False
        name = url[len(WEBHOOKS) :]
        if name.endswith("/"):
            name = name[:-1]
        if not name or "/" in name or not name.isascii():
            return False
        source = endpoint.sources.get(name)
        if source is None:
            return False
        headers = header_map(self.headers)
        declared = headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > source.body_limit:
            return False
        if "transfer-encoding" in headers:
            return False
        http_version = parser.get_http_version()
        keep_alive = http_version != "1.0" and parser.should_keep_alive()
        direct = _Direct(source, headers, endpoint.request_id(headers), keep_alive)
        endpoint.in_flight += 1  # the in-flight gauge reads it
        self._direct = direct
        self.cycle = direct  # type: ignore[assignment]  # what uvicorn's code reads
        return True

    def _stop_reading(self, direct: _Direct) -> None:
        if direct.body_timer is not None:
            direct.body_timer.cancel()
            direct.body_timer = None

    def _serve(self, direct: _Direct) -> None:
        """The body is complete: run the endpoint's steps; answer now, or once published."""
        endpoint = self._endpoint
        assert endpoint is not None
        try:
            step = endpoint.accept(
                direct.source, direct.headers, bytes(direct.body), direct.request_id
            )
        except Exception as exc:  # a bug: answer and count it; never publish, never crash
            step = endpoint.failed(direct.source, direct.request_id, exc)
        direct.body = bytearray()
        if isinstance(step, Pending):
            step.future.add_done_callback(lambda _f: self._settle(direct, step))
        else:
            self._respond(direct, step)

    def _settle(self, direct: _Direct, pending: Pending) -> None:
        endpoint = self._endpoint
        assert endpoint is not None
        try:
            result = endpoint.settle(pending)
        except Exception as exc:
            result = endpoint.failed(direct.source, direct.request_id, exc)
        except asyncio.CancelledError:  # nothing cancels a publish future; if one ever does
            result = endpoint.failed(direct.source, direct.request_id, PublishCancelled())
        self._respond(direct, result)

    def _body_too_slow(self, direct: _Direct) -> None:
        direct.body_timer = None
        if self._direct is not direct:
            return
        self._direct = None
        self._stop_reading(direct)
        assert self._endpoint is not None
        self._respond(direct, self._endpoint.answer("too_slow", CLOSE))

    def _respond(self, direct: _Direct, result: Result) -> None:
        """Count the request, then write its answer in one write, as uvicorn would have
        written it (its default headers; ``connection: close`` when not kept alive)."""
        endpoint = self._endpoint
        assert endpoint is not None
        endpoint.in_flight -= 1
        status, outcome, body, extra = result
        endpoint.finish(direct.source, outcome, direct.started)
        direct.response_complete = True
        if self.transport.is_closing():  # the client left: the publish stands, nobody to tell
            return
        payload, headers = endpoint.render(status, body, extra, direct.request_id)
        closes = CLOSE_HEADER in extra  # too_slow says close
        keep_alive = direct.keep_alive and not closes
        content = [STATUS_LINE[status], _DefaultLines.of(self.server_state.default_headers)]
        for name, value in headers:
            content += (name, b": ", value, b"\r\n")
        if not keep_alive and not closes:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", payload)
        self.transport.write(b"".join(content))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refused:  # our own stop, not a malformed request
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        self._timing_head = False
        if not self.transport.is_closing():
            self._answer_and_close(HEAD_TOO_LARGE)

    def _answer_and_close(self, answer: bytes) -> None:
        """Answer, then close gently: a close with unread bytes pending sends a reset, which
        can destroy the answer before the client reads it. So: half-close, discard what
        still comes (`data_received`), close for good when the client does or at LINGER_S."""
        self._refused = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


def guarded_protocol(settings: GatewaySettings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=`` option, with this gateway's limits."""
    return type(
        "GatewayHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_header_bytes": settings.max_header_bytes,
            "max_headers": settings.max_headers,
        },
    )


class WorkerHttpProtocol(GuardedHttpToolsProtocol):
    """The protocol of `gateway --workers N`: uvicorn starts each worker afresh and imports
    its protocol by name, so the limits are set on this class by the worker's app factory
    (`gateway.server.worker_app`), before the first connection."""


def configure_worker_protocol(settings: GatewaySettings) -> None:
    WorkerHttpProtocol.header_timeout_s = settings.header_timeout_s
    WorkerHttpProtocol.max_header_bytes = settings.max_header_bytes
    WorkerHttpProtocol.max_headers = settings.max_headers
