"""The HTTP connection layer: uvicorn's httptools protocol with limits on the request head.

uvicorn closes a keep-alive connection only after a response, and llhttp limits no
header size: a connection that never sends a request, or trickles its headers, stays
open, and a head of any size is parsed and buffered. `guarded_protocol` adds:

- ``gateway.header_timeout_s``: the whole request head (request line and headers) must
  arrive within this time from the connection's start, or from the end of the previous
  response; otherwise the connection is closed (with a 408 if part of a head came).
  Bodies have their own limit (``body_timeout_s``, answered by the app).
- ``gateway.max_header_bytes`` and ``gateway.max_headers``: a head larger than this, or
  with more header fields, is answered 431 and the connection closed, without reading on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from schemas.config import GatewaySettings


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
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # ------------------------------------------------------------------ the deadline
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self._head_bytes:  # part of a head came: say why; an idle one just closes
            self._answer_and_close(HEAD_TOO_SLOW)
        else:
            self.transport.close()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        # the client may now send its next request: its head has the full time again
        if not pipelined and self._reading_head and not self.transport.is_closing():
            self._head_bytes = 0
            self._arm_head_timer()

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

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_size = 0
        self._head_fields = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.max_header_bytes or self._head_fields > self.max_headers:
            self._refused = True
            raise _HeadTooLarge  # the parser stops; uvicorn calls send_400_response

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True  # what follows on this connection is a new head

    def send_400_response(self, msg: str) -> None:
        if self._refused:  # our own stop, not a malformed request
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        self._cancel_head_timer()
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
