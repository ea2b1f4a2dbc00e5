"""`webhook-bridge topics` and `webhook-bridge check-config`."""

from __future__ import annotations

import argparse

from gateway import config as config_module
from gateway.cli import add_config_argument
from gateway.topics import ensure_topics, implied_topics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--dry-run", action="store_true", help="list the topics, create nothing")


def run(args: argparse.Namespace) -> int:
    settings = config_module.load(args.config)
    specs = implied_topics(settings)
    if args.dry_run:
        for spec in specs:
            print(
                f"{spec.name} partitions={spec.partitions} "
                f"replication={spec.replication_factor} config={spec.config}"
            )
        return 0
    result = ensure_topics(settings.admin_config(), specs)
    for spec in specs:
        print(f"{result[spec.name]:>8} {spec.name} (partitions={spec.partitions})")
    return 0


def check(args: argparse.Namespace) -> int:
    """Everything a process would check at start-up, for every process at once."""
    import os

    from consumers.sinks.registry import validate_sink

    settings = config_module.load(args.config)
    for sink in settings.sinks.values():
        validate_sink(sink, os.environ)
    print(f"config ok: {len(settings.sources)} sources, {len(settings.sinks)} sinks")
    return 0
