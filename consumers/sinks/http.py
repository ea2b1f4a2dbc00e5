"""``type = "http"``: POST the provider's original body, signed (Standard Webhooks).

Options (``[sinks.<name>]``):

- ``url`` (required): http(s) URL to POST to.
- ``secret`` (required): name of the environment variable holding ``whsec_<base64>``.
- ``timeout_s`` (10): whole-request timeout; ``connect_timeout_s`` (5): TCP + TLS connect.
- ``max_connections`` (100): connection pool size (keep-alive, one pool per sink).
- ``ca_file``: PEM bundle of the CAs to trust for an ``https`` url, instead of certifi's
  (relative paths resolve against the working directory). Certificates are always verified.
- ``proxy_from_env`` (false): when true, honour ``HTTP(S)_PROXY`` / ``NO_PROXY`` (and
  ``~/.netrc``); off by default so a process environment cannot reroute deliveries.
- ``demo_receiver`` (false): `webhook-bridge up` (make run) also runs the demo receiver
  (`webhook-bridge receiver`) at ``url``, which must then be on 127.0.0.1 or localhost
  with an explicit port. Without it, `up` starts nothing there: the URL is your service.

The client is aiohttp: one `ClientSession` per sink, opened on the first delivery, with
at most `max_connections` keep-alive connections, idle ones dropped after `KEEPALIVE_S`,
no cookies, no automatic redirects, no decompression. ``timeout_s`` is kept by one timer
for all requests in flight (`schemas.deadlines`); aiohttp only times the connect. The
answer's body is read up to `DRAIN_BYTES` so the connection can be reused; a longer one
closes the connection instead. httpx cost ~2 ms of CPU per request (a few hundred
deliveries/s); aiohttp costs about twice the instructions per request of the
hand-written client it replaced (docs/benchmarks.md, "Fan-out", has the figures).

Outcome: 2xx ok; 408, 429, 5xx, network errors (TLS failures included), timeouts and an
answer cut short are retried (with ``Retry-After`` honoured); any other status (3xx too:
redirects are not followed) and a header aiohttp refuses to send are rejections (DLQ at
once). A connection closed before any answer (the race with the receiver's idle timeout
on a reused connection) is retried once at once, on another connection.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from urllib.parse import SplitResult, urlsplit

import aiohttp
import certifi  # the CA bundle the sink has always used (httpx brings it in)
from yarl import URL

from consumers.sinks.base import (
    DeliveryResult,
    Event,
    Sink,
    SinkContext,
    int_option,
    parse_retry_after,
)
from schemas import standard_webhooks
from schemas.config import SinkSettings, url_problem
from schemas.deadlines import Deadlines
from schemas.envelope import micros_to_iso
from schemas.options import Options

RETRYABLE_STATUS = frozenset({408, 429})
DEMO_HOSTS = ("127.0.0.1", "localhost")
USER_AGENT = "webhook-bridge"
KEEPALIVE_S = 4.0  # under the 5 s idle timeout of uvicorn and Node, so we close first
DRAIN_BYTES = 65536  # answer bytes read to keep a connection; the body itself is unused


class HttpSink(Sink):
    OPTIONS = (
        "url",
        "secret",
        "timeout_s",
        "connect_timeout_s",
        "max_connections",
        "ca_file",
        "proxy_from_env",
        "demo_receiver",
    )

    def __init__(self, settings: SinkSettings, context: SinkContext) -> None:
        super().__init__(settings, context)
        url, key, timeout, connect, pool = _parse(self.options, context.env)
        self.url = url
        self._url = URL(url)
        self._keys = standard_webhooks.Keys([("", key)])
        # The whole-request bound is ours (one timer for every request in flight); aiohttp
        # only bounds the connect: its per-request timer cost ~4 % of a delivery's CPU.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect)
        self._deadlines = Deadlines(timeout)
        self._ssl, self._proxy_from_env = _transport(self.options)
        self._connections = pool
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def validate(cls, settings: SinkSettings, env: Mapping[str, str]) -> None:
        opts = cls.options_for(settings)
        _parse(opts, env)
        _transport(opts)

    def headers(self, event: Event, now: float) -> dict[str, str]:
        return dict(self._header_list(event, now))

    def _header_list(self, event: Event, now: float) -> list[tuple[str, str]]:
        env = event.envelope
        signed = standard_webhooks.sign(self._keys, env.event_id, int(now), env.body)
        return [
            ("content-type", env.content_type or "application/octet-stream"),
            *signed.items(),
            ("x-webhook-provider", env.provider),
            ("x-webhook-event-type", env.event_type),
            ("x-webhook-occurred-at", micros_to_iso(env.occurred_at)),
            ("user-agent", USER_AGENT),
        ]

    def _open(self) -> aiohttp.ClientSession:
        """The session; made on first use because aiohttp binds it to the running loop."""
        connector = aiohttp.TCPConnector(
            limit=self._connections, keepalive_timeout=KEEPALIVE_S, ssl=self._ssl
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=self._proxy_from_env,
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding"),
        )

    async def deliver(self, event: Event) -> DeliveryResult:
        if self._session is None:
            self._session = self._open()
        headers = self._header_list(event, time.time())
        try:
            for attempt in (1, 2):
                try:
                    return await self._deadlines.run(
                        self._post(self._session, headers, event.envelope.body)
                    )
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    if attempt == 2 or isinstance(exc, aiohttp.ClientConnectorError):
                        raise  # a connect failure is not the idle-close race
            raise AssertionError("unreachable")  # pragma: no cover
        except TimeoutError:  # timeout_s (Deadlines), and aiohttp's connect timeout
            return DeliveryResult.retry("timeout")
        except aiohttp.ClientConnectorCertificateError as exc:
            problem = getattr(exc.certificate_error, "verify_message", "") or "bad certificate"
            return DeliveryResult.retry(f"tls: {problem}")
        except (aiohttp.ClientError, OSError) as exc:
            return DeliveryResult.retry(f"network: {type(exc).__name__}")
        except ValueError as exc:  # a header with CR/LF: the same event would fail again
            return DeliveryResult.reject(f"not sendable: {exc}")

    async def _post(
        self, session: aiohttp.ClientSession, headers: list[tuple[str, str]], body: bytes
    ) -> DeliveryResult:
        # Awaited and released by hand rather than `async with`: the same release (a body
        # not read to its end closes the connection instead of pooling it), ~3 % less CPU.
        r = await session.post(self._url, data=body, headers=headers, allow_redirects=False)
        try:
            drained = 0
            while drained < DRAIN_BYTES and not r.content.at_eof():
                drained += len(await r.content.readany())  # raises if the answer is cut short
            status = r.status
            if 200 <= status < 300:
                return DeliveryResult.ok(status)
            if status in RETRYABLE_STATUS or status >= 500:
                retry_after = parse_retry_after(r.headers.get("retry-after"), time.time())
                return DeliveryResult.retry(f"status {status}", status, retry_after)
            return DeliveryResult.reject(f"status {status}", status)
        finally:
            r.release()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


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


def _transport(opts: Options) -> tuple[ssl.SSLContext, bool]:
    """The TLS context (verifying, with `ca_file` or certifi's CAs) and `proxy_from_env`."""
    pem = opts.file_bytes("ca_file")
    try:
        if pem is None:
            context = ssl.create_default_context(cafile=certifi.where())
        else:
            context = ssl.create_default_context(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:
        raise opts.fail("ca_file", f"not a PEM bundle of CA certificates ({exc})") from None
    return context, opts.flag("proxy_from_env", False)
