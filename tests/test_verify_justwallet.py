"""Just Wallet: static token, hex HMAC over the raw body, hex HMAC over a re-serialised body."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.verify import build_verifier, sign_request
from tests.verify_vectors import Case, hmac_hex, make_ctx, req, run_case, verify

SECRET = "jw_secret_Aa1!"
OTHER = "jw_secret_Bb2!"
# As sent: pretty-printed, raw UTF-8, unescaped slashes.
BODY = (
    '{\n  "event.type": "payout",\n  "data": {\n    "id": "po_8a7f",\n'
    '    "status": "completed",\n    "url": "https://pay.example/p/1",\n'
    '    "beneficiary": "Zoë 😀",\n    "amount": 10.0,\n'
    '    "created_at": "2024-02-09T12:08:43.000000Z"\n  }\n}'
).encode()
# What the samples sign, written out by hand.
NODE = (
    '{"event.type":"payout","data":{"id":"po_8a7f","status":"completed",'
    '"url":"https://pay.example/p/1","beneficiary":"Zoë 😀","amount":10,'
    '"created_at":"2024-02-09T12:08:43.000000Z"}}'
).encode()
PHP = (
    b'{"event.type":"payout","data":{"id":"po_8a7f","status":"completed",'
    b'"url":"https:\\/\\/pay.example\\/p\\/1","beneficiary":"Zo\\u00eb \\ud83d\\ude00",'
    b'"amount":10.0,"created_at":"2024-02-09T12:08:43.000000Z"}}'
)
NOT_JSON = b"payout=1&id=po_8a7f"
S = "Signature"

CASES: list[Case] = [
    ("token", {S: SECRET}, BODY, None),
    ("token in Webhook-Secret (Ruby)", {"Webhook-Secret": SECRET}, BODY, None),
    ("hmac over raw body", {S: hmac_hex(SECRET, BODY)}, BODY, None),
    ("hmac over raw body, upper hex", {S: hmac_hex(SECRET, BODY).upper()}, BODY, None),
    ("hmac over Node re-serialisation", {S: hmac_hex(SECRET, NODE)}, BODY, None),
    ("hmac over PHP re-serialisation", {S: hmac_hex(SECRET, PHP)}, BODY, None),
    ("hmac over non-JSON raw body", {S: hmac_hex(SECRET, NOT_JSON)}, NOT_JSON, None),
    ("non-JSON body, reserialised sig", {S: hmac_hex(SECRET, NODE)}, NOT_JSON, "bad_signature"),
    (
        "tampered body",
        {S: hmac_hex(SECRET, BODY)},
        BODY.replace(b"po_8a7f", b"po_0000"),
        "bad_signature",
    ),
    (
        "tampered body vs Node sig",
        {S: hmac_hex(SECRET, NODE)},
        BODY.replace(b"10.0", b"11.0"),
        "bad_signature",
    ),
    ("wrong secret", {S: hmac_hex(OTHER, BODY)}, BODY, "bad_signature"),
    ("wrong token", {S: OTHER}, BODY, "bad_signature"),
    ("token prefix only", {S: SECRET[:-1]}, BODY, "bad_signature"),
    ("missing header", {"X-Other": SECRET}, BODY, "missing_header"),
    ("empty header", {S: ""}, BODY, "bad_signature"),
    ("deeply nested JSON", {S: "00" * 32}, b"[" * 100_000 + b"]" * 100_000, "bad_signature"),
    ("NaN in JSON", {S: "00" * 32}, b'{"a": NaN}', "bad_signature"),
]

EXPECTED_MODE = {
    "token": "token",
    "token in Webhook-Secret (Ruby)": "token",
    "hmac over raw body": "hmac-raw",
    "hmac over raw body, upper hex": "hmac-raw",
    "hmac over Node re-serialisation": "hmac-reserialized-node",
    "hmac over PHP re-serialisation": "hmac-reserialized-php",
    "hmac over non-JSON raw body": "hmac-raw",
}


@pytest.mark.parametrize(("name", "headers", "body", "reason"), CASES, ids=[c[0] for c in CASES])
def test_vectors(name: str, headers: dict[str, str], body: bytes, reason: str | None) -> None:
    result = run_case("justwallet", make_ctx([SECRET]), headers, body, reason)
    if result is not None:
        assert result.mode == EXPECTED_MODE[name]
        assert result.key_id == "SECRET_1"


def test_rotation() -> None:
    ctx = make_ctx([OTHER, SECRET])
    assert verify("justwallet", ctx, {S: hmac_hex(SECRET, PHP)}, BODY).key_id == "SECRET_2"
    assert verify("justwallet", ctx, {S: SECRET}, BODY).key_id == "SECRET_2"


@pytest.mark.parametrize(
    ("modes", "headers", "reason"),
    [
        (["token"], {S: hmac_hex(SECRET, BODY)}, "bad_signature"),
        (["hmac-raw"], {S: SECRET}, "bad_signature"),
        (["hmac-raw"], {S: hmac_hex(SECRET, NODE)}, "bad_signature"),
        (["hmac-reserialized"], {S: hmac_hex(SECRET, PHP)}, None),
        (["hmac-raw"], {"Webhook-Secret": SECRET}, "missing_header"),
    ],
)
def test_modes_restrict(modes: list[str], headers: dict[str, str], reason: str | None) -> None:
    run_case("justwallet", make_ctx([SECRET], {"modes": modes}), headers, BODY, reason)


def test_node_orders_integer_keys_first() -> None:
    body = b'{"b": 1, "2": 2, "10": 3, "a": 1.5e0}'
    node = b'{"2":2,"10":3,"b":1,"a":1.5}'
    result = verify("justwallet", make_ctx([SECRET]), {S: hmac_hex(SECRET, node)}, body)
    assert result.mode == "hmac-reserialized-node"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"modes": ["hmac"]}, "verify.modes"),
        ({"modes": []}, "verify.modes"),
        ({"token_headers": "x", "tolerance_s": 5}, "verify.tolerance_s"),
    ],
)
def test_config_errors(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_verifier("justwallet", make_ctx([SECRET], options))
    assert info.value.key == f"sources.test.{key}"


@pytest.mark.parametrize("modes", [["hmac-raw"], ["token"], ["hmac-reserialized"]])
def test_round_trip(modes: list[str]) -> None:
    ctx = make_ctx([SECRET], {"modes": modes})
    headers = sign_request("justwallet", ctx, BODY, 0)
    result = build_verifier("justwallet", ctx).verify(req(headers, BODY), 0)
    assert result.mode is not None and result.mode.startswith(modes[0])
