"""Default selectors per scheme, from each provider's documentation (docs/providers.md).

A source's ``[sources.X.select]`` overrides any of them. Where a provider documents
no event id (Jiko, Just Wallet), the id is a hash of the canonical JSON body: a
re-sent event with other whitespace or key order gets the same id. Where it
documents no occurrence time, the gateway uses the time it received the request
and records that in the envelope (``occurred_at_origin = RECEIVED``).
"""

from __future__ import annotations

DEFAULT_SELECTORS: dict[str, dict[str, str]] = {
    # {"event_type": "...", "payload": {"application_id": ..., ...}}
    "jiko": {
        "type": "event_type",
        "occurred_at": "payload.updated_at | payload.created_at | payload.timestamp",
        "ordering_key": "payload.application_id | payload.card_id | payload.transfer_id"
        " | payload.transaction_id | payload.id",
    },
    # {"event.type": "payout", "data": {"id": ..., "created_at": ..., "updated_at": ...}}
    # data.id is the payout/transaction id (shared by its status updates): it orders,
    # it does not identify the event.
    "justwallet": {
        "type": '["event.type"]',
        "occurred_at": "data.completed_at | data.updated_at | data.created_at",
        "ordering_key": "data.id",
    },
    # J.P. Morgan's "Notification payload samples" page (Embedded Payments; PROVIDERS.md
    # shows no payload): {"eventId": "5120", "eventType": "ACCOUNT_CREATED",
    # "resourceType": "ACCOUNTS", "resource": "{\"id\": ...}" (a JSON string), and on some
    # events "resourceObject": {"id": ...}}. No event time: occurred_at is when received.
    "jpmorgan": {
        "id": "eventId",
        "type": "eventType",
        "ordering_key": "resourceObject.id | resource.id",
    },
    # {"id": "evt_...", "type": "link.credentials_changed", "created_at": ..., "data": {...}}
    # A refresh intent's data names the link or account it refreshed in refreshed_object_id
    # (Fintoc's Ruby and Python samples read it there); data.id would be the intent.
    "fintoc": {
        "id": "id",
        "type": "type",
        "occurred_at": "created_at | signed:timestamp",
        "ordering_key": "data.refreshed_object_id | data.id",
    },
    "standard-webhooks": {
        "id": "signed:id",
        "type": "type",
        "occurred_at": "timestamp | signed:timestamp",
        "ordering_key": "data.id",
    },
    "stripe": {
        "id": "id",
        "type": "type",
        "occurred_at": "created | signed:timestamp",
        "ordering_key": "data.object.id",
    },
    "github": {
        "id": "signed:id",
        "type": "signed:type",
        "ordering_key": "repository.full_name | organization.login",
    },
    "shopify": {
        "id": "signed:id",
        "type": "signed:type",
        "occurred_at": "updated_at | created_at",
        "ordering_key": "admin_graphql_api_id | id",
    },
    "slack": {
        "id": "event_id",
        "type": "event.type | type",
        "occurred_at": "event_time | event.event_ts",
        "ordering_key": "team_id",
    },
    "hmac": {
        "id": "signed:id | id",
        "type": "signed:type | type",
        "occurred_at": "signed:timestamp",
    },
    "none": {"id": "id", "type": "type"},
}
