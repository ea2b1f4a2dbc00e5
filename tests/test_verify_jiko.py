"""Jiko: x-jiko-signature = base64(HMAC-SHA256(secret, raw body)), padded, no timestamp."""

from __future__ import annotations

import base64

from gateway.verify import sign_request
from tests.verify_vectors import (
    Case,
    dumps,
    hmac_b64,
    hmac_digest,
    make_ctx,
    req,
    run_case,
    table,
    verify,
)

SECRET = "jiko-partner-secret-0001"
OTHER = "jiko-partner-secret-0002"
BODY = dumps(
    {
        "event_type": "card.transaction.approved",
        "payload": {"application_id": "app_123", "card_id": "card_9", "amount": "12.50"},
    }
)
SIG = hmac_b64(SECRET, BODY)
H = "x-jiko-signature"

CASES: list[Case] = [
    ("valid", {H: SIG}, BODY, None),
    ("header name case-insensitive", {"X-Jiko-Signature": SIG}, BODY, None),
    ("tampered body", {H: SIG}, BODY.replace(b"12.50", b"99.50"), "bad_signature"),
    ("wrong secret", {H: hmac_b64(OTHER, BODY)}, BODY, "bad_signature"),
    ("missing header", {}, BODY, "missing_header"),
    ("empty header", {H: ""}, BODY, "malformed_header"),
    ("base64 garbage", {H: "!!not*base64!!"}, BODY, "malformed_header"),
    ("unpadded base64", {H: SIG.rstrip("=")}, BODY, "malformed_header"),
    ("hex instead of base64", {H: hmac_digest(SECRET.encode(), BODY).hex()}, BODY, "bad_signature"),
    (
        "url-safe alphabet",
        {H: base64.urlsafe_b64encode(b"\xfb" * 32).decode()},
        BODY,
        "malformed_header",
    ),
]


@table(CASES)
def test_vectors(headers: dict[str, str], body: bytes, reason: str | None) -> None:
    run_case("jiko", make_ctx([SECRET]), headers, body, reason)


def test_length_is_44() -> None:
    assert len(SIG) == 44


def test_rotation_reports_matching_secret() -> None:
    result = verify("jiko", make_ctx([OTHER, SECRET]), {H: SIG}, BODY)
    assert result.key_id == "SECRET_2"
    assert result.scheme == "jiko"
    assert result.signed_timestamp is None


def test_invalid_utf8_body() -> None:
    body = b"\xff\xfe{not json"
    assert verify("jiko", make_ctx([SECRET]), {H: hmac_b64(SECRET, body)}, body).key_id


def test_round_trip() -> None:
    ctx = make_ctx([SECRET])
    headers = sign_request("jiko", ctx, BODY, 0.0)
    assert headers == {"x-jiko-signature": SIG}
    from gateway.verify import build_verifier

    assert build_verifier("jiko", ctx).verify(req(headers, BODY), 0.0).key_id == "SECRET_1"
