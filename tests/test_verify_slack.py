"""Slack: X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:{timestamp}:{body}")>, 300 s."""

from __future__ import annotations

from gateway.verify import build_verifier, sign_request
from tests.verify_vectors import NOW, TS, Case, hmac_hex, make_ctx, req, run_case, table

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BODY = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweebread&text=%C3%BC"
H, T = "X-Slack-Signature", "X-Slack-Request-Timestamp"


def sig(ts: str = TS, body: bytes = BODY, secret: str = SECRET) -> str:
    return "v0=" + hmac_hex(secret, b"v0:" + ts.encode() + b":" + body)


OLD, AHEAD = str(int(NOW) - 400), str(int(NOW) + 400)
CASES: list[Case] = [
    ("valid", {H: sig(), T: TS}, BODY, None),
    ("tampered body", {H: sig(), T: TS}, BODY + b"&x=1", "bad_signature"),
    ("wrong secret", {H: sig(secret="x"), T: TS}, BODY, "bad_signature"),
    ("stale timestamp", {H: sig(OLD), T: OLD}, BODY, "stale_timestamp"),
    ("future timestamp", {H: sig(AHEAD), T: AHEAD}, BODY, "future_timestamp"),
    ("timestamp not the signed one", {H: sig(), T: str(int(NOW) - 5)}, BODY, "bad_signature"),
    ("missing signature", {T: TS}, BODY, "missing_header"),
    ("missing timestamp", {H: sig()}, BODY, "missing_header"),
    ("non-numeric timestamp", {H: sig(), T: "now"}, BODY, "malformed_header"),
    ("negative timestamp", {H: sig(), T: "-1"}, BODY, "malformed_header"),
    ("wrong prefix", {H: sig().replace("v0=", "v1="), T: TS}, BODY, "malformed_header"),
]


@table(CASES)
def test_vectors(headers: dict[str, str], body: bytes, reason: str | None) -> None:
    run_case("slack", make_ctx([SECRET]), headers, body, reason)


def test_rotation() -> None:
    result = build_verifier("slack", make_ctx(["old", SECRET])).verify(
        req({H: sig(), T: TS}, BODY), NOW
    )
    assert (result.key_id, result.signed_timestamp) == ("SECRET_2", NOW)


def test_round_trip() -> None:
    ctx = make_ctx([SECRET])
    headers = sign_request("slack", ctx, BODY, NOW)
    assert headers == {H: sig(), T: TS}
    assert build_verifier("slack", ctx).verify(req(headers, BODY), NOW).key_id == "SECRET_1"
