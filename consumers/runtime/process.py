"""CLI glue shared by `webhook-bridge compactor` and `webhook-bridge reorderer`.

Flag -> settings -> logic -> loop, like the gateway: the config gives defaults,
flags override, every scalar also has its ``BRIDGE_*`` environment twin (for
example ``BRIDGE_COMPACTOR_INSTANCE_ID``, ``BRIDGE_REORDERER_METRICS_PORT``).
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
from collections.abc import Callable
from typing import Any

from schemas.config import add_config_argument

# librdkafka defaults that the config may override, for every consumer process.
# Short session timeouts rather than static membership (group.instance.id): a member
# killed with -9 is declared dead within 6 s, so a restarted process (or a surviving
# peer) owns its partitions again within ~10 s, while a member that never comes back
# also frees its partitions in 6 s (static membership keeps them for the whole session
# timeout), and nothing depends on a stable per-pod identity, which a Deployment does not
# give. The embedded broker also holds the first JoinGroup for session.timeout.ms / 2.
CONSUMER_DEFAULTS = {
    "session.timeout.ms": "6000",
    "heartbeat.interval.ms": "500",
    "auto.offset.reset": "earliest",
    # The broker answers a fetch within this wait (the embedded one can hold it to
    # the end even when data arrives: 500 ms by default), so it bounds the delay per
    # hop. Shorter is not better on the embedded broker: its read_committed fetch
    # costs CPU that grows with the log, and 5 ms saturated it at 2,000 events/s.
    "fetch.wait.max.ms": "20",
}
# Java-compatible key -> partition mapping, so every client agrees on key order.
PRODUCER_DEFAULTS = {"partitioner": "murmur2_random", "linger.ms": "2"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--instance-id",
        help="this instance's id in the group; part of its "
        "stable transactional.id (env twin BRIDGE_<STAGE>_INSTANCE_ID)",
    )
    parser.add_argument("--metrics-host", help="ops endpoint address (default from config)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="ops endpoint port, 0 for any free one (default from config)",
    )


def run_stage(args: argparse.Namespace, stage: str, build: Callable[[Any, str, Any], Any]) -> int:
    """Load the config, build `build(settings, instance_id, registry) -> (logic, metrics)`, run."""
    from prometheus_client import CollectorRegistry

    from consumers.ops import Health, OpsServer
    from consumers.runtime.loop import LoopSettings, StageLoop, call_timeout_s
    from consumers.runtime.watch import BrokerWatch, GroupLag
    from schemas import config as config_module
    from schemas import logs
    from schemas.process import broker_reachable_gauge
    from schemas.topics import names

    settings = config_module.load(args.config)
    logs.setup(settings.bridge.log_level, settings.bridge.log_format, process=stage)
    section = getattr(settings, stage)
    instance_id = args.instance_id or section.instance_id
    prefix = names(settings).prefix
    registry = CollectorRegistry()
    logic, metrics = build(settings, instance_id, registry)
    consumer_config = {**CONSUMER_DEFAULTS, **settings.consumer_config()}
    consumer_config.update(
        {
            "isolation.level": "read_committed",
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            # names the member in the group's description (`kafka-consumer-groups`)
            "client.id": f"{stage}-{instance_id}",
        }
    )
    producer_config = {**PRODUCER_DEFAULTS, **settings.producer_config()}
    group_id = f"{prefix}.{stage}"
    loop = StageLoop(
        LoopSettings(
            stage=stage,
            group_id=group_id,
            transactional_id=f"{prefix}.{stage}.{instance_id}",
            instance_id=instance_id,
            consumer_config=consumer_config,
            producer_config=producer_config,
            commit_interval_s=section.commit_interval_ms / 1000.0,
            max_batch=section.max_batch,
            call_timeout_s=call_timeout_s(producer_config),
        ),
        logic,
        metrics,
        Health(),
    )
    host = args.metrics_host or section.metrics_host
    port = section.metrics_port if args.metrics_port is None else args.metrics_port
    ops = OpsServer(host, port, loop.health, registry).start()
    logs.info("ops endpoint listening", host=host, port=ops.port, instance=instance_id)
    lag = GroupLag(
        group_id,
        {t: metrics.lag.labels(stage, logic.provider_of(t)) for t in logic.input_topics()},
    )
    watch = BrokerWatch(
        settings.admin_config(), stage, broker_reachable_gauge(registry, stage).labels(stage), [lag]
    ).start()

    def on_signal(signum: int, _frame: object) -> None:
        logs.info("signal received; draining", signal=signal.Signals(signum).name)
        loop.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # `kill -USR1 <pid>`: every thread's stack to stderr, for a process that seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return loop.run()
    finally:
        watch.stop()
        ops.stop()
        close = getattr(logic, "close", None)
        if close is not None:
            close()
