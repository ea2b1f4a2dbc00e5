"""`webhook-bridge fanout [--sink NAME ...]`: one consumer group and one runner per sink.

All selected sinks run as asyncio tasks on one event loop (uvloop when
installed) in one process: deliveries are I/O-bound, so one core serves many
sinks, and each sink still has its own consumer, group, offsets, retry state
and breaker, so a slow sink holds back nobody else. For hard isolation (a
custom sink that burns CPU, separate scaling), run one process per sink with
``--sink NAME``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import threading
from collections.abc import Mapping, Sequence

from consumers.fanout.metrics import FanoutMetrics
from consumers.ops import Health, OpsServer
from schemas import logs
from schemas.config import Settings
from schemas.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from schemas.config import add_config_argument

    add_config_argument(parser)
    parser.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this sink (repeatable; default: every sink in the config)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of /metrics /healthz /readyz (default fanout.metrics_port, "
        "env BRIDGE_FANOUT_METRICS_PORT; 0 picks a free one)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM, how long in-flight deliveries may finish (default 10)",
    )


def select_sinks(settings: Settings, wanted: Sequence[str]) -> list[str]:
    for name in wanted:
        if name not in settings.sinks:
            raise ConfigError(
                "--sink", f"no sink {name!r}; configured: {', '.join(settings.sinks) or '(none)'}"
            )
    return list(dict.fromkeys(wanted)) if wanted else list(settings.sinks)


class Fanout:
    """Runs the selected sinks until `stop()`; usable in-process (tests, bench) too."""

    def __init__(
        self,
        settings: Settings,
        sinks: Sequence[str],
        metrics: FanoutMetrics,
        env: Mapping[str, str] | None = None,
        health: Health | None = None,
        drain_timeout_s: float = 10.0,
        commit_interval_s: float = 0.2,
    ) -> None:
        from consumers.fanout.policy import validate_sink
        from consumers.fanout.runner import SinkRunner, group_id, source_topics
        from consumers.runtime.watch import BrokerWatch, GroupLag
        from consumers.sinks import SinkContext, build_sink
        from schemas.process import broker_reachable_gauge

        env = dict(os.environ) if env is None else dict(env)
        for name in sinks:
            validate_sink(settings.sinks[name], env)
        metrics.init_sinks(sinks, settings.providers)
        self.health = health
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        context = SinkContext(settings, env)

        def make(name: str) -> SinkRunner:
            sink_settings = settings.sinks[name]
            return SinkRunner(
                settings,
                sink_settings,
                build_sink(sink_settings, context),
                metrics,
                health,
                commit_interval_s,
                drain_timeout_s,
            )

        self._make = make
        self._sinks = list(sinks)
        self.runners: list[SinkRunner] = []
        lags = [
            GroupLag(
                group_id(settings, name),
                dict.fromkeys(
                    source_topics(settings, settings.sinks[name]), metrics.lag.labels(name)
                ),
            )
            for name in sinks
        ]
        reachable = broker_reachable_gauge(metrics.registry, "fanout").labels("fanout")
        self._watch = BrokerWatch(settings.admin_config(), "fanout", reachable, lags)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested.is_set():
            self._stop.set()
        # Sinks are built on the loop: their clients (httpx) belong to it.
        self.runners = [self._make(name) for name in self._sinks]
        tasks = [
            asyncio.create_task(r.run(self._stop), name=f"sink-{r.name}") for r in self.runners
        ]
        ready = asyncio.create_task(self._watch_ready())
        self._watch.start()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                self._stop.set()
                await asyncio.wait(tasks)
                raise failed[0].exception()  # type: ignore[misc]
        finally:
            ready.cancel()
            await asyncio.to_thread(self._watch.stop)
            self.runners = []  # drop the clients (producers) with the loop

    async def _watch_ready(self) -> None:
        while self.health is not None:
            self.health.ready = all(r.assigned or not r.topics for r in self.runners)
            await asyncio.sleep(0.5)

    def stop(self) -> None:
        """Thread-safe and signal-safe: stop fetching and drain."""
        self._stop_requested.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)


def run(args: argparse.Namespace) -> int:
    from schemas import config

    settings = config.load(args.config)
    logs.setup(settings.bridge.log_level, settings.bridge.log_format, process="fanout")
    sinks = select_sinks(settings, args.sink)
    if not sinks:
        raise ConfigError("sinks", "no sink configured; add a [sinks.<name>] table")
    health = Health()
    fanout = Fanout(
        settings, sinks, FanoutMetrics(), health=health, drain_timeout_s=args.drain_timeout
    )
    port = settings.fanout.metrics_port if args.metrics_port is None else args.metrics_port
    ops = OpsServer(settings.fanout.metrics_host, port, health).start()
    logs.info("fanout starting", sinks=",".join(sinks), metrics_port=ops.port)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, fanout.stop)
        await fanout.run()

    # Imports and config are done: move them out of the collector's way (a full
    # collection no longer walks them), and collect the young generation less often:
    # every record allocates a few dozen short-lived containers.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 10)
    try:
        _run_loop(main())
    finally:
        ops.stop()
    logs.info("fanout stopped")
    return 0


def _run_loop(coro: object) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    uvloop.run(coro)  # type: ignore[arg-type]
