"""The gateway: `create_app(settings)` builds the app (Starlette, with the webhook POST
dispatched in front of it: `GatewayApp`); nothing runs at import.

    POST /webhooks/{source}   read (capped) -> verify -> normalise -> Avro -> produce -> ack
    GET  /healthz             the process is alive
    GET  /readyz              the background broker probe reaches a broker (no I/O here)
    GET  /metrics             Prometheus text exposition

The webhook endpoint's own steps, and `ANSWERS`, the one table of its answers, are in
`gateway.endpoint` (compiled with mypyc where a compiler is at hand).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.endpoint import WebhookEndpoint
from gateway.metrics import (
    GatewayMetrics,
    multiprocess_dir,
    multiprocess_registry,
    verified_labels,
)
from gateway.publisher import Publisher
from gateway.sources import build_verifiers
from schemas import logs
from schemas.config import Settings
from schemas.process import broker_reachable_gauge
from schemas.serde import EnvelopeSerializer
from schemas.topics import names

WEBHOOKS_PREFIX = "/webhooks/"


class GatewayApp(Starlette):
    """Starlette, with the webhook POST dispatched before its middleware stack and router.

    A ``POST /webhooks/{source}`` (or ``.../{source}/``) goes straight to the endpoint:
    Starlette's error and exception middleware, its router and the route's regex would
    add about a tenth of a request's CPU, and the endpoint answers every situation
    itself (`ANSWERS`). Everything else (other methods, other paths, the lifespan, a
    mounted root path) is Starlette's, through the same routes as before."""

    webhook: WebhookEndpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(WEBHOOKS_PREFIX):
                source = path[len(WEBHOOKS_PREFIX) :]
                if source.endswith("/"):
                    source = source[:-1]
                if source and "/" not in source:  # what the routes' {source} matches
                    scope["app"] = self
                    scope["path_params"] = {"source": source}
                    await self.webhook(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


async def _every(interval_s: float, action: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        action()


def registry_topics(settings: Settings) -> list[str]:
    """The topics the gateway writes, each with its subject ``<topic>-value`` in registry mode."""
    topic_names = names(settings)
    return [*(topic_names.raw(p) for p in settings.providers), topic_names.quarantine]


def create_app(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    registry: CollectorRegistry | None = None,
    serializer: EnvelopeSerializer | None = None,
) -> GatewayApp:
    registry = registry if registry is not None else CollectorRegistry()
    verifiers = build_verifiers(settings)  # reads the secrets: a ConfigError here
    metrics = GatewayMetrics(
        ((s.name, s.deadline_s) for s in settings.sources.values()),
        registry,
        verified=[
            (s.name, *labels)
            for s in settings.sources.values()
            for labels in verified_labels(s, verifiers[s.name])
        ],
    )
    publisher = publisher or Publisher(
        settings.producer_config(),
        registry_topics(settings),
        busy_poll_in_flight=settings.gateway.busy_poll_in_flight,
    )
    serializer = serializer or EnvelopeSerializer(settings.bridge.schema_registry_url)
    endpoint = WebhookEndpoint(settings, verifiers, publisher, serializer, metrics)
    reachable = broker_reachable_gauge(registry, "gateway", lambda: publisher.broker_reachable)

    def refresh_gauges() -> None:
        """The gauges read from the publisher and the endpoint. One process reads them at
        each scrape; the workers of `--workers N` also write them every second for the
        others' scrapes."""
        metrics.queue.set(publisher.queue_depth())
        metrics.in_flight.set(endpoint.in_flight)
        metrics.missing_topics.set(len(publisher.missing_topics))
        reachable.labels("gateway").set(float(publisher.broker_reachable))

    metrics.queue.set_function(publisher.queue_depth)
    # Read, not counted: an inc() and a dec() per request cost more than the reading.
    metrics.in_flight.set_function(lambda: endpoint.in_flight)
    metrics.missing_topics.set_function(lambda: len(publisher.missing_topics))
    workers = multiprocess_dir() is not None
    publisher.on_rebuild.append(metrics.rebuilds.inc)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        publisher.start(loop)
        if serializer.uses_registry:  # register schemas now, not on the request path
            for topic in registry_topics(settings):  # no-op if server.run did already
                await loop.run_in_executor(None, serializer.prepare, topic)
        # Every watched topic once before serving; the watch then takes one per second.
        await loop.run_in_executor(None, publisher.check_broker, 2.0)
        logs.info(
            "gateway ready",
            sources=",".join(settings.sources),
            bootstrap=settings.kafka.get("bootstrap.servers", ""),
        )
        refresher = asyncio.create_task(_every(1.0, refresh_gauges)) if workers else None
        try:
            yield
        finally:
            if refresher is not None:
                refresher.cancel()
            # On the loop thread: flushing serves the last delivery reports.
            left = publisher.close(settings.gateway.drain_timeout_s)
            logs.info("gateway stopped", unflushed=left)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        # State the broker watch keeps (a probe a second): never waits on the broker.
        if publisher.broker_reachable:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "broker unreachable"}, status_code=503)

    async def metrics_endpoint(_request: Request) -> Response:
        if not workers:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        refresh_gauges()
        return Response(generate_latest(multiprocess_registry()), media_type=CONTENT_TYPE_LATEST)

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    routes = [
        Route("/webhooks/{source}", endpoint=endpoint, methods=methods),
        # A provider's POST does not follow a redirect: a trailing slash is the same endpoint.
        Route("/webhooks/{source}/", endpoint=endpoint, methods=methods),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = GatewayApp(routes=routes, lifespan=lifespan)
    app.webhook = endpoint
    app.router.redirect_slashes = False  # anything else unknown is a 404, never a 307
    app.state.publisher = publisher
    app.state.metrics = metrics
    app.state.registry = registry
    return app
