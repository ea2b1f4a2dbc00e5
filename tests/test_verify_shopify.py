"""Shopify: X-Shopify-Hmac-SHA256 = base64(HMAC-SHA256(secret, body)); webhook id and topic."""

from __future__ import annotations

from gateway.verify import build_verifier, sign_request
from tests.verify_vectors import Case, dumps, hmac_b64, make_ctx, req, run_case, table

SECRET = "shpss_app_secret_new"
OLD = "shpss_app_secret_old"
BODY = dumps({"id": 820982911946154508, "email": "jon@example.com", "note": "ünïcode"})
H = "X-Shopify-Hmac-SHA256"
SIG = hmac_b64(SECRET, BODY)

CASES: list[Case] = [
    ("valid", {H: SIG}, BODY, None),
    ("lower-case header name", {"x-shopify-hmac-sha256": SIG}, BODY, None),
    ("tampered body", {H: SIG}, BODY.replace(b"jon", b"eve"), "bad_signature"),
    ("wrong secret", {H: hmac_b64("nope", BODY)}, BODY, "bad_signature"),
    ("missing header", {}, BODY, "missing_header"),
    ("base64 garbage", {H: "%%%%"}, BODY, "malformed_header"),
    ("truncated signature", {H: SIG[:20]}, BODY, "bad_signature"),
]


@table(CASES)
def test_vectors(headers: dict[str, str], body: bytes, reason: str | None) -> None:
    run_case("shopify", make_ctx([SECRET]), headers, body, reason)


def test_rotation_old_and_new_both_pass() -> None:
    verifier = build_verifier("shopify", make_ctx([SECRET, OLD]))
    assert verifier.verify(req({H: SIG}, BODY), 0).key_id == "SECRET_1"
    assert verifier.verify(req({H: hmac_b64(OLD, BODY)}, BODY), 0).key_id == "SECRET_2"


def test_ids_and_topic() -> None:
    verifier = build_verifier("shopify", make_ctx([SECRET]))
    headers = {H: SIG, "X-Shopify-Event-Id": "ev-2", "X-Shopify-Topic": "orders/create"}
    result = verifier.verify(req(headers, BODY), 0)
    assert (result.event_id, result.event_type) == ("ev-2", "orders/create")
    headers["X-Shopify-Webhook-Id"] = "wh-1"
    assert verifier.verify(req(headers, BODY), 0).event_id == "wh-1"


def test_round_trip() -> None:
    ctx = make_ctx([SECRET])
    headers = sign_request("shopify", ctx, BODY, 0, event_id="wh-9", event_type="orders/paid")
    assert headers[H] == SIG
    result = build_verifier("shopify", ctx).verify(req(headers, BODY), 0)
    assert (result.event_id, result.event_type) == ("wh-9", "orders/paid")
