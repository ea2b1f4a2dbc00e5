"""``type = "http"``: POST the provider's original body, signed (Standard Webhooks).

Options (``[sinks.<name>]``):

- ``url`` (required): http(s) URL to POST to.
- ``secret`` (required): name of the environment variable holding ``whsec_<base64>``.
- ``timeout_s`` (10): whole-request timeout; ``connect_timeout_s`` (5).
- ``max_connections`` (100): connection pool size (keep-alive, one pool per sink).
- ``demo_receiver`` (false): `webhook-bridge up` (make run) also runs the demo receiver
  (`webhook-bridge receiver`) at ``url``, which must then be on 127.0.0.1 or localhost
  with an explicit port. Without it, `up` starts nothing there: the URL is your service.

The client is `consumers.sinks.http_client` (asyncio + httptools), not httpx:
httpx cost ~2 ms of CPU per request, which capped a sink at a few hundred/s.

Outcome: 2xx ok; 408, 429, 5xx, network errors and timeouts are retried (with
``Retry-After`` honoured); any other status is a rejection (DLQ at once).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import SplitResult, urlsplit

from consumers.sinks.base import (
    DeliveryResult,
    Event,
    Sink,
    SinkContext,
    int_option,
    parse_retry_after,
)
from consumers.sinks.http_client import HttpClient, HttpError, RequestTimeout
from schemas import standard_webhooks
from schemas.config import SinkSettings, url_problem
from schemas.envelope import micros_to_iso
from schemas.options import Options

RETRYABLE_STATUS = frozenset({408, 429})
DEMO_HOSTS = ("127.0.0.1", "localhost")
USER_AGENT = "webhook-bridge"


class HttpSink(Sink):
    OPTIONS = (
        "url",
        "secret",
        "timeout_s",
        "connect_timeout_s",
        "max_connections",
        "demo_receiver",
    )

    def __init__(self, settings: SinkSettings, context: SinkContext) -> None:
        super().__init__(settings, context)
        url, key, timeout, connect, pool = _parse(self.options, context.env)
        self.url = url
        parts = urlsplit(url)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._keys = standard_webhooks.Keys([("", key)])
        self._client = HttpClient(
            url, timeout_s=timeout, connect_timeout_s=connect, max_connections=pool
        )

    @classmethod
    def validate(cls, settings: SinkSettings, env: Mapping[str, str]) -> None:
        _parse(cls.options_for(settings), env)

    def headers(self, event: Event, now: float) -> dict[str, str]:
        return dict(self._header_list(event, now))

    def _header_list(self, event: Event, now: float) -> list[tuple[str, str]]:
        env = event.envelope
        timestamp = int(now)
        return [
            ("content-type", env.content_type or "application/octet-stream"),
            ("webhook-id", env.event_id),
            ("webhook-timestamp", str(timestamp)),
            (
                standard_webhooks.SIGNATURE_HEADER,
                self._keys.sign(
                    standard_webhooks.signed_content(env.event_id, str(timestamp), env.body)
                ),
            ),
            ("x-webhook-provider", env.provider),
            ("x-webhook-event-type", env.event_type),
            ("x-webhook-occurred-at", micros_to_iso(env.occurred_at)),
            ("user-agent", USER_AGENT),
        ]

    async def deliver(self, event: Event) -> DeliveryResult:
        try:
            response = await self._client.request(
                "POST", self._target, self._header_list(event, time.time()), event.envelope.body
            )
        except RequestTimeout:
            return DeliveryResult.retry("timeout")
        except HttpError as exc:
            return DeliveryResult.retry(f"network: {type(exc).__name__}")
        status = response.status
        if 200 <= status < 300:
            return DeliveryResult.ok(status)
        if status in RETRYABLE_STATUS or status >= 500:
            retry_after = parse_retry_after(response.header("retry-after"), time.time())
            return DeliveryResult.retry(f"status {status}", status, retry_after)
        return DeliveryResult.reject(f"status {status}", status)

    async def close(self) -> None:
        await self._client.close()


def demo_receiver_port(settings: SinkSettings) -> int | None:
    """The loopback port where `up` runs the demo receiver for this sink, or None."""
    opts = HttpSink.options_for(settings)
    if not opts.flag("demo_receiver", False):
        return None
    return _demo_port(opts, urlsplit(opts.opt_text("url") or ""))


def _demo_port(opts: Options, parts: SplitResult) -> int:
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.hostname not in DEMO_HOSTS or not port:
        raise opts.fail(
            "demo_receiver",
            "the demo receiver runs on this machine: url must be http://127.0.0.1:<port>/... "
            "or http://localhost:<port>/...",
        )
    return port


def _parse(opts: Options, env: Mapping[str, str]) -> tuple[str, bytes, float, float, int]:
    url = opts.opt_text("url")
    if not url:
        raise opts.fail("url", "required: the http(s) URL to POST events to")
    problem = url_problem(url)
    if problem is not None:
        raise opts.fail("url", problem)
    if opts.flag("demo_receiver", False):
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise opts.fail("demo_receiver", "the demo receiver serves http://, not https://")
        _demo_port(opts, parts)
    var = opts.opt_text("secret")
    if not var:
        raise opts.fail("secret", "required: the environment variable holding whsec_<base64>")
    value = env.get(var)
    if not value:
        raise opts.fail("secret", f"environment variable {var} is not set")
    try:
        key = standard_webhooks.decode_secret(value)
    except ValueError as exc:
        raise opts.fail("secret", f"environment variable {var}: {exc}") from None
    return (
        url,
        key,
        opts.number("timeout_s", 10.0),
        opts.number("connect_timeout_s", 5.0),
        int_option(opts, "max_connections", 100),
    )
