"""`webhook-bridge gateway`: serve the app with uvicorn.

SIGTERM or a first Ctrl-C drains: uvicorn stops accepting, waits up to
`gateway.drain_timeout_s` for requests in flight (each waiting for its Kafka
acknowledgement), then the lifespan flushes the producer. A second Ctrl-C forces.
"""

from __future__ import annotations

import argparse
import signal
from typing import Any

from gateway import config as config_module
from gateway import logs
from gateway.cli import add_config_argument
from gateway.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--host", help="listen address (default gateway.host)")
    parser.add_argument("--port", type=int, help="listen port (default gateway.port)")
    # One process per gateway: its metrics and readiness are per process. Scale out
    # with replicas (or several processes behind a balancer), not uvicorn workers.


def uvicorn_config(app: Any, settings: Settings, host: str, port: int, **overrides: Any) -> Any:
    """The uvicorn.Config the gateway runs with (tests serve the app with the same one)."""
    import uvicorn

    from gateway.connections import guarded_protocol

    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": int(settings.gateway.drain_timeout_s) or 1,
        "loop": "uvloop",
        # httptools, with a deadline and size limits on the request head (gateway.connections)
        "http": guarded_protocol(settings.gateway),
        "lifespan": "on",
        "workers": 1,
        **overrides,
    }
    return uvicorn.Config(app, **options)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app, registry_topics
    from schemas.serde import EnvelopeSerializer

    settings = config_module.load(args.config)
    logs.setup(settings.bridge.log_level, settings.bridge.log_format, process="gateway")
    host = args.host or settings.gateway.host
    port = args.port if args.port is not None else settings.gateway.port
    serializer = EnvelopeSerializer(settings.bridge.schema_registry_url)
    # Registry mode: register before listening, so a registry that refuses the
    # envelope (or cannot be reached) stops the gateway with one line (SerdeError,
    # printed by gateway.cli), never as 5xx answers to providers later.
    for topic in registry_topics(settings) if serializer.uses_registry else ():
        serializer.prepare(topic)
    app = create_app(settings, serializer=serializer)
    server = uvicorn.Server(uvicorn_config(app, settings, host, port))
    logs.info("gateway listening", url=f"http://{host}:{port}")
    # uvicorn drains on SIGTERM, then re-raises the signal to the handler that was
    # installed before it: a no-op here, so a clean drain exits 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run()
    return 0
