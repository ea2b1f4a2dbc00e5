"""`webhook-bridge receiver`: the demo internal service behind the `demo-receiver` sink.

A tiny Starlette app: checks the Standard Webhooks signature of every POST and
prints one line per event (id, provider, type, verified). Answers 200 when the
signature holds, 401 otherwise (the fan-out then dead-letters it: a 4xx).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--secret-env",
        default="DEMO_RECEIVER_SECRET",
        help="environment variable holding the whsec_ secret",
    )


def create_app(key: bytes | None) -> Starlette:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from schemas import standard_webhooks

    async def events(request: Request) -> PlainTextResponse:
        body = await request.body()
        h = request.headers
        event_id = h.get("webhook-id", "")
        verified = key is not None and standard_webhooks.verify_signature(
            key, event_id, h.get("webhook-timestamp", ""), body, h.get("webhook-signature", "")
        )
        # One write per line: print() writes the newline apart, and with PYTHONUNBUFFERED
        # another process sharing the terminal (under `make run`) could land in between.
        sys.stdout.write(
            f"event id={event_id} provider={h.get('x-webhook-provider', '')} "
            f"type={h.get('x-webhook-event-type', '')} "
            f"verified={'yes' if verified else 'no'}\n"
        )
        sys.stdout.flush()
        return PlainTextResponse(
            "ok\n" if verified else "bad signature\n", status_code=200 if verified else 401
        )

    async def healthz(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{path:path}", events, methods=["POST"]),
        ]
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from schemas import standard_webhooks

    secret = os.environ.get(args.secret_env, "")
    key: bytes | None = None
    try:
        key = standard_webhooks.decode_secret(secret) if secret else None
    except ValueError:
        key = None
    if key is None:
        print(
            f"receiver: {args.secret_env} is not a whsec_ secret; every event will show "
            "verified=no",
            file=sys.stderr,
        )
    uvicorn.run(
        create_app(key),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0
