"""Stripe: Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(whsec_ as UTF-8, "{t}.{body}")>."""

from __future__ import annotations

from gateway.verify import build_verifier, sign_request
from tests.verify_vectors import NOW, TS, Case, dumps, hmac_hex, make_ctx, req, run_case, table

SECRET = "whsec_c3RyaXBlLXRlc3Qtc2VjcmV0"  # used as UTF-8, NOT base64-decoded
OTHER = "whsec_b3RoZXItc2VjcmV0"
BODY = dumps({"id": "evt_1NG8Du2eZvKYlo2C", "type": "invoice.paid", "data": {"object": {}}})
H = "Stripe-Signature"


def sig(secret: str = SECRET, ts: str = TS, body: bytes = BODY) -> str:
    return hmac_hex(secret, f"{ts}.".encode() + body)


ARABIC_DIGITS = "\u0661\u0667" + "\u0660" * 8  # int() accepts these, the scheme must not
OLD = str(int(NOW) - 301)
AHEAD = str(int(NOW) + 301)
CASES: list[Case] = [
    ("valid", {H: f"t={TS},v1={sig()}"}, BODY, None),
    (
        "valid at edge of window",
        {H: f"t={int(NOW) - 300},v1={sig(ts=str(int(NOW) - 300))}"},
        BODY,
        None,
    ),
    ("spaces and unknown keys", {H: f"t={TS}, v0=abc, v1={sig()}"}, BODY, None),
    ("several v1, last matches", {H: f"t={TS},v1={'0' * 64},v1={sig()}"}, BODY, None),
    ("several v1, first matches", {H: f"t={TS},v1={sig()},v1=zz"}, BODY, None),
    ("upper-case hex", {H: f"t={TS},v1={sig().upper()}"}, BODY, None),
    ("tampered body", {H: f"t={TS},v1={sig()}"}, BODY + b"\n", "bad_signature"),
    ("wrong secret", {H: f"t={TS},v1={sig(OTHER)}"}, BODY, "bad_signature"),
    (
        "base64-decoded key",
        {H: f"t={TS},v1={hmac_hex(b'stripe-test-secret', TS.encode() + b'.' + BODY)}"},
        BODY,
        "bad_signature",
    ),
    ("stale timestamp", {H: f"t={OLD},v1={sig(ts=OLD)}"}, BODY, "stale_timestamp"),
    ("future timestamp", {H: f"t={AHEAD},v1={sig(ts=AHEAD)}"}, BODY, "future_timestamp"),
    ("timestamp swapped", {H: f"t={int(NOW) - 1},v1={sig()}"}, BODY, "bad_signature"),
    ("missing header", {}, BODY, "missing_header"),
    ("no timestamp", {H: f"v1={sig()}"}, BODY, "missing_header"),
    ("no v1", {H: f"t={TS},v0={sig()}"}, BODY, "malformed_header"),
    ("repeated t", {H: f"t={TS},t={OLD},v1={sig()}"}, BODY, "malformed_header"),
    ("non-numeric t", {H: f"t=1e9,v1={sig()}"}, BODY, "malformed_header"),
    (
        "unicode digits t",
        {H: f"t={ARABIC_DIGITS},v1={sig()}"},
        BODY,
        "malformed_header",
    ),
    ("garbage", {H: "garbage"}, BODY, "malformed_header"),
    ("v1 not hex", {H: f"t={TS},v1=not-hex"}, BODY, "malformed_header"),
    ("huge header", {H: f"t={TS}," + "v1=00," * 5000}, BODY, "malformed_header"),
]


@table(CASES)
def test_vectors(headers: dict[str, str], body: bytes, reason: str | None) -> None:
    result = run_case("stripe", make_ctx([SECRET]), headers, body, reason)
    if result is not None:
        assert result.signed_timestamp is not None


def test_rotation() -> None:
    ctx = make_ctx([OTHER, SECRET])
    result = build_verifier("stripe", ctx).verify(req({H: f"t={TS},v1={sig()}"}, BODY), NOW)
    assert (result.key_id, result.signed_timestamp) == ("SECRET_2", NOW)


def test_tolerance_override() -> None:
    old = str(int(NOW) - 1000)
    ctx = make_ctx([SECRET], {"tolerance_s": 3600})
    verifier = build_verifier("stripe", ctx)
    assert verifier.verify(req({H: f"t={old},v1={sig(ts=old)}"}, BODY), NOW).key_id == "SECRET_1"


def test_round_trip() -> None:
    ctx = make_ctx([SECRET])
    headers = sign_request("stripe", ctx, BODY, NOW)
    assert headers == {H: f"t={TS},v1={sig()}"}
    assert build_verifier("stripe", ctx).verify(req(headers, BODY), NOW).key_id == "SECRET_1"
