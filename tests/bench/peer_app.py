"""The benchmark's peer: the gateway anyone writes in an afternoon.

Starlette, the same Jiko HMAC check, the raw body to Kafka with confluent-kafka
(idempotent, acks=all), and the answer after the delivery report: a background
thread polls the producer and hands each report to the event loop. No envelope,
no Avro, no normalising, no metrics. Configured by PEER_BOOTSTRAP and PEER_TOPIC.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from confluent_kafka import Producer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SECRET = os.environ.get("JIKO_WEBHOOK_SECRET", "").encode()
TOPIC = os.environ.get("PEER_TOPIC", "peer")
producer = Producer(
    {
        "bootstrap.servers": os.environ.get("PEER_BOOTSTRAP", "127.0.0.1:9092"),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
    }
)
running = True


def _poll() -> None:
    while running:
        producer.poll(0.1)


async def webhook(request: Request) -> Response:
    body = await request.body()
    expected = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, request.headers.get("x-jiko-signature", "")):
        return Response(b'{"error":"unauthorized"}', status_code=401, media_type="application/json")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def resolve(err: Any) -> None:
        if not done.done():
            done.set_result(err)

    def report(err: Any, _msg: Any) -> None:
        loop.call_soon_threadsafe(resolve, err)

    producer.produce(TOPIC, body, key=hashlib.sha256(body).hexdigest(), on_delivery=report)
    try:
        err = await asyncio.wait_for(done, 2.5)
    except TimeoutError:
        err = "timeout"
    if err is not None:
        return Response(b'{"error":"unavailable"}', status_code=503, media_type="application/json")
    return Response(b'{"status":"accepted"}', media_type="application/json")


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    global running
    poller = threading.Thread(target=_poll, daemon=True)
    poller.start()
    yield
    running = False
    producer.flush(10)


app = Starlette(routes=[Route("/webhooks/{source}", webhook, methods=["POST"])], lifespan=lifespan)
