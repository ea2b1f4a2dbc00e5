"""`webhook-bridge gateway`: serve the app with uvicorn.

SIGTERM or a first Ctrl-C drains: uvicorn stops accepting, waits up to
`gateway.drain_timeout_s` for requests in flight (each waiting for its Kafka
acknowledgement), then the lifespan flushes the producer. A second Ctrl-C forces.

`--workers N` (``gateway.workers``) runs N processes on one port: uvicorn's
supervisor binds the socket, starts the workers (and restarts one that dies), and
each worker builds its own app and its own producer. `/metrics` stays one scrape
for all of them: the workers share their series through prometheus-client's
multiprocess mode (a folder the parent makes, `PROMETHEUS_MULTIPROC_DIR`), so a
counter is the sum over the workers and each gauge is added up as its
`multiprocess_mode` says. One scrape per worker was the other choice; it needs a
port per worker and a scrape config that knows N, where this needs nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

from schemas import config as config_module
from schemas import logs
from schemas.config import Settings, add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--host", help="listen address (default gateway.host)")
    parser.add_argument("--port", type=int, help="listen port (default gateway.port)")
    parser.add_argument(
        "--workers",
        type=int,
        help="processes serving the port, each with its own producer "
        "(default gateway.workers, env BRIDGE_GATEWAY_WORKERS)",
    )


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
        # Nothing reads the client address or scheme: uvicorn's X-Forwarded-* rewriting
        # would only wrap every request in one more ASGI call.
        "proxy_headers": False,
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
    # printed by deploy.cli), never as 5xx answers to providers later.
    for topic in registry_topics(settings) if serializer.uses_registry else ():
        serializer.prepare(topic)
    workers = args.workers or settings.gateway.workers
    if workers > 1:
        return _run_workers(args.config, settings, host, port, workers)
    app = create_app(settings, serializer=serializer)
    server = uvicorn.Server(uvicorn_config(app, settings, host, port))
    logs.info("gateway listening", url=f"http://{host}:{port}")
    # uvicorn drains on SIGTERM, then re-raises the signal to the handler that was
    # installed before it: a no-op here, so a clean drain exits 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run()
    return 0


def _run_workers(config_path: str, settings: Settings, host: str, port: int, workers: int) -> int:
    import shutil
    import tempfile

    from uvicorn.supervisors import Multiprocess

    from gateway.metrics import MULTIPROC_ENV

    # A folder given in PROMETHEUS_MULTIPROC_DIR (an emptyDir, say) is used and emptied;
    # else a temporary one. The workers are new interpreters: they find it, and the
    # config, in the environment.
    given = os.environ.get(MULTIPROC_ENV)
    metrics_dir = given or tempfile.mkdtemp(prefix="webhook-bridge-metrics-")
    for stale in Path(metrics_dir).glob("*.db"):  # a previous run's series
        stale.unlink()
    os.environ[MULTIPROC_ENV] = metrics_dir
    os.environ[WORKER_CONFIG_ENV] = str(config_path)
    config = uvicorn_config(
        "gateway.server:worker_app",
        settings,
        host,
        port,
        factory=True,
        workers=workers,
        http="gateway.connections:WorkerHttpProtocol",
    )
    logs.info("gateway listening", url=f"http://{host}:{port}", workers=workers)
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
    finally:
        if not given:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


WORKER_CONFIG_ENV = "BRIDGE_CONFIG"


def worker_app() -> Any:
    """One worker's app (`--workers N`): the config named by the parent, its own producer."""
    from gateway.app import create_app
    from gateway.connections import configure_worker_protocol
    from schemas.process import die_with_parent

    die_with_parent()  # a killed supervisor must not leave its workers serving
    settings = config_module.load(os.environ[WORKER_CONFIG_ENV])
    logs.setup(settings.bridge.log_level, settings.bridge.log_format, process="gateway")
    configure_worker_protocol(settings.gateway)
    return create_app(settings)
