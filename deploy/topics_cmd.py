"""`webhook-bridge topics` and `webhook-bridge check-config`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from deploy.topics import create_and_check_topics
from schemas import config as config_module
from schemas.config import Settings, add_config_argument
from schemas.topics import implied_topics


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
    report = create_and_check_topics(settings.admin_config(), specs)
    for spec in specs:
        print(f"{report.status[spec.name]:>8} {spec.name} (partitions={spec.partitions})")
    for problem in report.warnings:
        print(f"warning: {problem}", file=sys.stderr)
    for problem in report.errors:
        print(f"error: {problem}", file=sys.stderr)
    if report.errors:
        print(
            f"{len(report.errors)} topic error(s): fix or re-create these topics; "
            "the stages that use them must not start",
            file=sys.stderr,
        )
        return 1
    return 0


def check(args: argparse.Namespace) -> int:
    """`webhook-bridge check-config`: everything a process would check at start-up, for
    every process at once. Raises ConfigError (one line, exit code 2) on the first problem."""
    settings = load_checked(args.config)
    print(f"config ok: {len(settings.sources)} sources, {len(settings.sinks)} sinks")
    return 0


def load_checked(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Load the config and validate what only the processes would otherwise find at their
    start (every source's secrets and verifier, every sink's options, resolved with its
    class): the one check before anything starts, for `check-config` and `up` alike."""
    from consumers.fanout.policy import validate_sink
    from gateway.sources import build_verifiers

    env = dict(os.environ) if env is None else env
    settings = config_module.load(path, env)
    build_verifiers(settings)  # the gateway's sources: secrets, verify options, keys
    for sink in settings.sinks.values():
        validate_sink(sink, env)
    return settings
