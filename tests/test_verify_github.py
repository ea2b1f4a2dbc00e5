"""GitHub: X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>; delivery id and event."""

from __future__ import annotations

from gateway.verify import build_verifier, sign_request
from tests.verify_vectors import Case, dumps, hmac_hex, make_ctx, req, run_case, table

SECRET = "It's a Secret to Everybody"
OTHER = "another secret"
BODY = dumps({"action": "opened", "number": 1, "repository": {"full_name": "o/r"}})
H = "X-Hub-Signature-256"
SIG = "sha256=" + hmac_hex(SECRET, BODY)
META = {"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "X-GitHub-Event": "issues"}

CASES: list[Case] = [
    ("valid", {H: SIG, **META}, BODY, None),
    ("valid without delivery headers", {H: SIG}, BODY, None),
    ("tampered body", {H: SIG}, BODY[:-2], "bad_signature"),
    ("wrong secret", {H: "sha256=" + hmac_hex(OTHER, BODY)}, BODY, "bad_signature"),
    ("missing header", {"X-Hub-Signature": "sha1=00"}, BODY, "missing_header"),
    ("no prefix", {H: hmac_hex(SECRET, BODY)}, BODY, "malformed_header"),
    ("sha1 prefix", {H: "sha1=" + hmac_hex(SECRET, BODY)}, BODY, "malformed_header"),
    ("empty after prefix", {H: "sha256="}, BODY, "malformed_header"),
    ("non-ascii", {H: "sha256=ü" * 40}, BODY, "malformed_header"),
]


@table(CASES)
def test_vectors(headers: dict[str, str], body: bytes, reason: str | None) -> None:
    run_case("github", make_ctx([SECRET]), headers, body, reason)


def test_published_example() -> None:
    """GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!"."""
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert hmac_hex(SECRET, b"Hello, World!") == expected
    result = run_case(
        "github", make_ctx([SECRET]), {H: "sha256=" + expected}, b"Hello, World!", None
    )
    assert result is not None


def test_event_id_and_type() -> None:
    result = build_verifier("github", make_ctx([OTHER, SECRET])).verify(
        req({H: SIG, **META}, BODY), 0
    )
    assert result.event_id == META["X-GitHub-Delivery"]
    assert result.event_type == "issues"
    assert result.key_id == "SECRET_2"


def test_round_trip() -> None:
    ctx = make_ctx([SECRET])
    headers = sign_request("github", ctx, BODY, 0, event_id="d-1", event_type="push")
    assert headers[H] == SIG
    result = build_verifier("github", ctx).verify(req(headers, BODY), 0)
    assert (result.event_id, result.event_type) == ("d-1", "push")
