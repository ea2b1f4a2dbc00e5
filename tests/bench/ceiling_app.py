"""The benchmark's ceiling: a bare Starlette endpoint that only checks the same Jiko HMAC."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SECRET = os.environ.get("JIKO_WEBHOOK_SECRET", "").encode()


async def webhook(request: Request) -> Response:
    body = await request.body()
    expected = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, request.headers.get("x-jiko-signature", "")):
        return Response(b'{"error":"unauthorized"}', status_code=401, media_type="application/json")
    return Response(b'{"status":"accepted"}', media_type="application/json")


app = Starlette(routes=[Route("/webhooks/{source}", webhook, methods=["POST"])])
