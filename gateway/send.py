"""`webhook-bridge send <source>`: sign a body the way the source's provider would, and post it.

The first example in the README, and a tool for providers' integration tests.
Secrets come from the same environment variables the gateway reads.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

from gateway import config as config_module
from gateway.cli import add_config_argument
from gateway.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("source", help="a source name from the config")
    parser.add_argument("--event", help="event type for the sample body")
    parser.add_argument("--body", help="a file whose bytes are sent as they are")
    parser.add_argument("--event-id", help="reuse an event id (to show deduplication)")
    parser.add_argument("--url", help="gateway base URL (default from gateway.host/port)")
    parser.add_argument("--count", type=int, default=1, help="send this many events")


def run(args: argparse.Namespace) -> int:
    import httpx

    from gateway.samples import sample_body
    from gateway.verify import sign_request

    settings = config_module.load(args.config)
    source = settings.sources.get(args.source)
    if source is None:
        raise ConfigError(
            "source",
            f"{args.source!r} is not in {args.config}; choose one of: "
            + ", ".join(settings.sources),
        )
    base = args.url or f"http://{settings.gateway.host}:{settings.gateway.port}"
    status = 0
    with httpx.Client(timeout=10.0) as client:
        for _ in range(args.count):
            now = time.time()
            event_id = args.event_id or f"evt_{uuid.uuid4().hex[:20]}"
            body = (
                Path(args.body).read_bytes()
                if args.body
                else sample_body(source.scheme, event_type=args.event, event_id=event_id, now=now)
            )
            headers = sign_request(
                source.scheme,
                source.verify_context,
                body,
                now,
                event_id=event_id,
                event_type=args.event,
            )
            headers.setdefault("content-type", "application/json")
            response = client.post(f"{base}/webhooks/{source.name}", content=body, headers=headers)
            print(f"{response.status_code} {response.text}")
            if response.status_code >= 300:
                status = 1
    sys.stdout.flush()
    return status
