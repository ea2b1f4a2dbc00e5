"""`webhook-bridge send <source>`: sign a body the way the source's provider would, and post it.

The first example in the README, and a tool for providers' integration tests.
Secrets come from the same environment variables the gateway reads; a variable
that is unset is taken from the demo secrets `webhook-bridge up` keeps
(``.state/demo-secrets.env``, see `deploy.demo_secrets`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from deploy import demo_secrets
from schemas import config as config_module
from schemas.config import add_config_argument
from schemas.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from gateway.verify.base import BuildContext
    from schemas.config import SourceSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("source", help="a source name from the config")
    parser.add_argument("--event", help="event type for the sample body")
    parser.add_argument("--body", help="a file whose bytes are sent as they are")
    parser.add_argument("--event-id", help="reuse an event id (to show deduplication)")
    parser.add_argument("--url", help="gateway base URL (default from gateway.host/port)")
    parser.add_argument("--count", type=int, default=1, help="send this many events")
    parser.add_argument(
        "--secrets-file",
        default=str(demo_secrets.DEFAULT_PATH),
        help="demo secrets written by `webhook-bridge up`, used for variables that are unset "
        f"(default {demo_secrets.DEFAULT_PATH})",
    )


def prepare(
    source: SourceSettings,
    context: BuildContext,
    *,
    event_type: str,
    event_id: str,
    now: float,
    body: bytes | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body (a sample of the provider's documented shape unless given) and the headers
    its provider would attach, signed the way that provider's documentation says."""
    from deploy.samples import sample_body
    from gateway.verify import sign_request

    if body is None:
        body = sample_body(source.scheme, event_type=event_type, event_id=event_id, now=now)
    headers = sign_request(
        source.scheme, context, body, now, event_id=event_id, event_type=event_type
    )
    headers.setdefault("content-type", "application/json")
    return body, headers


def run(args: argparse.Namespace) -> int:
    import httpx

    from deploy.samples import DEFAULT_TYPES
    from gateway.sources import verify_context

    env, _ = demo_secrets.with_fallback(os.environ, Path(args.secrets_file))
    settings = config_module.load(args.config, env)
    source = settings.sources.get(args.source)
    if source is None:
        raise ConfigError(
            "source",
            f"{args.source!r} is not in {args.config}; choose one of: "
            + ", ".join(settings.sources),
        )
    context = verify_context(settings, source.name)
    base = args.url or f"http://{settings.gateway.host}:{settings.gateway.port}"
    # Schemes that carry the type in a header (GitHub, Shopify) need one even for a
    # given --body: default to the sample's type, as the body would.
    event_type = args.event or DEFAULT_TYPES.get(source.scheme, "sample.created")
    status = 0
    with httpx.Client(timeout=10.0) as client:
        for _ in range(args.count):
            body, headers = prepare(
                source,
                context,
                event_type=event_type,
                event_id=args.event_id or f"evt_{uuid.uuid4().hex[:20]}",
                now=time.time(),
                body=Path(args.body).read_bytes() if args.body else None,
            )
            response = client.post(f"{base}/webhooks/{source.name}", content=body, headers=headers)
            print(f"{response.status_code} {response.text}")
            if response.status_code >= 300 or _quarantined(response):
                status = 1  # a quarantined event is stored but unusable: the test failed
    sys.stdout.flush()
    return status


def _quarantined(response: httpx.Response) -> bool:
    try:
        answer = response.json()
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("status") == "quarantined"
