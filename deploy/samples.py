"""Sample webhook bodies shaped like each provider's documented payloads (docs/providers.md).

Used by `webhook-bridge send`, the end-to-end tests and the benchmark. Each call
makes a new event (fresh ids) unless `event_id` is given.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

DEFAULT_TYPES = {
    "jiko": "card.transaction.approved",
    "justwallet": "payout",
    "jpmorgan": "TRANSACTION_COMPLETED",
    "fintoc": "link.credentials_changed",
    "stripe": "payment_intent.succeeded",
    "github": "push",
    "shopify": "orders/create",
    "slack": "event_callback",
}


_JPMORGAN_RESOURCE_TYPES = {"CLIENT": "CLIENTS", "ACCOUNT": "ACCOUNTS", "RECIPIENT": "RECIPIENTS"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sample_document(
    scheme: str,
    *,
    event_type: str | None = None,
    event_id: str | None = None,
    resource_id: str | None = None,
    occurred_at: float | None = None,
    now: float = 0.0,
) -> dict[str, Any]:
    when = occurred_at if occurred_at is not None else now
    eid = event_id or f"evt_{uuid.uuid4().hex[:20]}"
    rid = resource_id or f"res_{uuid.uuid4().hex[:12]}"
    kind = event_type or DEFAULT_TYPES.get(scheme, "sample.created")
    if scheme == "jiko":
        return {
            "event_type": kind,
            "payload": {
                "id": eid,
                "card_id": rid,
                "amount": "12.50",
                "currency": "USD",
                "created_at": _iso(when),
            },
        }
    if scheme == "justwallet":
        # PROVIDERS.md: the type is the literal key "event.type"; data.id is the payout or
        # transaction (absent on quote_creation.failed); ISO times with microseconds. The
        # body is compact, ASCII, without floats or "/": the documentation's Node, PHP and
        # Ruby samples re-serialise it to the same bytes, so one signature fits them all.
        data: dict[str, Any] = {"id": rid, "created_at": _iso(when), "updated_at": _iso(when)}
        if kind == "quote_creation.failed":
            del data["id"]
        return {"event.type": kind, "data": data}
    if scheme == "jpmorgan":
        # J.P. Morgan's "Notification payload samples": the resource is a JSON string.
        # They show CLIENTS and ACCOUNTS; TRANSACTIONS and RECIPIENTS are assumed.
        return {
            "eventId": eid,
            "eventType": kind,
            "resourceType": _JPMORGAN_RESOURCE_TYPES.get(kind.split("_", 1)[0], "TRANSACTIONS"),
            "resource": json.dumps({"id": rid}, separators=(",", ":")),
        }
    if scheme == "fintoc":
        # Fintoc's events: {"id", "type", "mode", "created_at", "data", "object": "event"};
        # a refresh intent names what it refreshed in data.refreshed_object(_id).
        fintoc_data: dict[str, Any]
        if ".refresh_intent." in kind:
            refreshed = kind.split(".", 1)[0]
            fintoc_data = {
                "object": "refresh_intent",
                "refreshed_object": refreshed,
                "refreshed_object_id": rid,
                "status": kind.rsplit(".", 1)[-1],
                "created_at": _iso(when),
                "type": "only_last",
            }
        else:
            fintoc_data = {"id": rid, "object": kind.split(".", 1)[0]}
        return {
            "id": eid,
            "type": kind,
            "mode": "test",
            "created_at": _iso(when),
            "data": fintoc_data,
            "object": "event",
        }
    if scheme == "stripe":
        return {
            "id": eid,
            "type": kind,
            "created": int(when),
            "data": {"object": {"id": rid}},
        }
    if scheme == "github":
        return {"action": "opened", "repository": {"full_name": f"acme/{rid}"}}
    if scheme == "shopify":
        return {
            "id": rid,
            "admin_graphql_api_id": f"gid://shopify/Order/{rid}",
            "updated_at": _iso(when),
        }
    if scheme == "slack":
        return {
            "event_id": eid,
            "type": kind,
            "team_id": rid,
            "event_time": int(when),
            "event": {"type": "message"},
        }
    return {"id": eid, "type": kind, "timestamp": _iso(when), "data": {"id": rid}}


def sample_body(scheme: str, **kwargs: Any) -> bytes:
    return json.dumps(sample_document(scheme, **kwargs), separators=(",", ":")).encode()
