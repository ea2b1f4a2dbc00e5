"""The webhook POST is dispatched in front of Starlette (`GatewayApp`): every path and
method still gets the answer the routes gave, and the POSTs do not pass Starlette's
router."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry
from starlette.routing import Router
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from deploy.samples import sample_body
from gateway.app import create_app
from gateway.sources import verify_context
from gateway.verify import sign_request
from tests.support import gateway_toml, settings_from_toml
from tests.test_metrics import AckingPublisher


def test_the_webhook_post_skips_the_router_and_everything_else_answers_as_before() -> None:
    settings = settings_from_toml(gateway_toml("127.0.0.1:9", "t"))
    publisher = AckingPublisher()
    app = create_app(settings, publisher=publisher, registry=CollectorRegistry())
    routed: list[str] = []
    original = Router.__call__

    async def spy(self: Router, scope: Scope, receive: Receive, send: Send) -> None:
        routed.append(f"{scope['type']} {scope.get('method', '')} {scope.get('path', '')}")
        await original(self, scope, receive, send)

    with TestClient(app) as client:
        Router.__call__ = spy  # type: ignore[method-assign]
        try:
            for path in ("/webhooks/jiko", "/webhooks/jiko/"):
                body = sample_body("jiko", now=time.time())
                headers = sign_request("jiko", verify_context(settings, "jiko"), body, time.time())
                answer = client.post(path, content=body, headers=headers)
                assert answer.status_code == 202, answer.text
                assert answer.json()["status"] == "accepted"
                assert answer.headers["x-request-id"] == answer.json()["request_id"]
            unknown = client.post("/webhooks/nope", content=b"{}")
            assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown source")
            unsigned = client.post("/webhooks/jiko", content=b"{}")
            assert unsigned.status_code == 401
            assert routed == [], "a webhook POST went through Starlette's router"

            wrong_method = client.get("/webhooks/jiko")  # the endpoint, through the route
            assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
            assert client.post("/webhooks/jiko/extra", content=b"{}").status_code == 404
            assert client.post("/webhooks/", content=b"{}").status_code == 404
            assert client.post("/webhooks//", content=b"{}").status_code == 404
            assert client.post("/healthz").status_code == 405
            assert client.get("/healthz").status_code == 200
            assert len(routed) == 6
        finally:
            Router.__call__ = original  # type: ignore[method-assign]
        metrics = client.get("/metrics").text
    assert len(publisher.sent) == 2
    assert 'webhook_bridge_gateway_requests_total{outcome="accepted",source="jiko"} 2.0' in metrics
    assert (
        'webhook_bridge_gateway_requests_total{outcome="not_found",source="_unknown"} 1.0'
        in metrics
    )
