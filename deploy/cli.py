"""`webhook-bridge <command>`: one console script, a subcommand per process and tool.

Every command module exposes ``add_arguments(parser)`` and ``run(args) -> int``;
this table is the only place that names them, and modules are imported lazily so
that `webhook-bridge broker` does not import Starlette.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from schemas import compiled
from schemas.config import add_config_argument
from schemas.errors import BridgeError, ConfigError

COMMANDS: dict[str, tuple[str, str]] = {
    "up": (
        "deploy.up",
        "run a local Kafka, the topics and every process, restarting what dies (make run)",
    ),
    "gateway": ("gateway.server", "serve POST /webhooks/{source} and publish to Kafka"),
    "compactor": ("consumers.compactor", "drop duplicate event ids: raw -> .unique"),
    "reorderer": ("consumers.reorderer", "restore occurrence order: .unique -> .ordered"),
    "fanout": ("consumers.fanout.process", "deliver .ordered events to the configured sinks"),
    "replay": ("consumers.replay", "re-deliver from a sink's DLQ or a topic range to a sink"),
    "receiver": (
        "consumers.fanout.receiver",
        "a demo internal service that checks and prints signed fan-out deliveries",
    ),
    "broker": (
        "deploy.broker_cmd",
        "run Apache Kafka (one node or a cluster) or the embedded broker in the foreground",
    ),
    "topics": ("deploy.topics_cmd", "create and check every topic the config implies"),
    "send": ("deploy.send", "sign a sample webhook with a source's scheme and post it"),
    "check-config": ("deploy.topics_cmd:check", "validate a config file and exit"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All commands are listed; only `command`'s module is imported for its arguments."""
    parser = argparse.ArgumentParser(prog="webhook-bridge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (target, help_text) in COMMANDS.items():
        module_name, _, func = target.partition(":")
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_target=(module_name, func or "run"))
        if name != command:
            continue
        if func:
            add_config_argument(sub_parser)
        else:
            importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    module_name, func = args._target
    old = compiled.stale()
    if old:  # it would run code that is no longer in the source
        print(f"error: {compiled.stale_message(old)}", file=sys.stderr)
        return 2
    try:
        code = int(getattr(importlib.import_module(module_name), func)(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
