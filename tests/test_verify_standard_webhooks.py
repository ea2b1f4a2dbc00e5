"""Standard Webhooks / Svix: v1 HMAC (base64 key after whsec_) and v1a Ed25519, +/- 5 min."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.verify import build_verifier, sign_request
from schemas.errors import ConfigError
from tests.verify_vectors import (
    NOW,
    TS,
    Case,
    hmac_digest,
    make_ctx,
    req,
    run_case,
    table,
    write_pem_private,
)

KEY = b"standard-webhooks-test-key-32by"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER = "whsec_" + base64.b64encode(b"some-other-key-of-32-bytes-long!").decode()
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f1W"
BODY = b'{"type":"invoice.paid","data":{"id":"inv_1","amount":1200}}'
ED_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
WHPK = (
    "whpk_"
    + base64.b64encode(
        ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
)


def content(msg_id: str = MSG_ID, ts: str = TS, body: bytes = BODY) -> bytes:
    return f"{msg_id}.{ts}.".encode() + body


def v1(key: bytes = KEY, ts: str = TS, body: bytes = BODY) -> str:
    return "v1," + base64.b64encode(hmac_digest(key, content(ts=ts, body=body))).decode()


def v1a(ts: str = TS) -> str:
    return "v1a," + base64.b64encode(ED_KEY.sign(content(ts=ts))).decode()


def hdrs(signature: str, ts: str = TS, prefix: str = "webhook") -> dict[str, str]:
    return {f"{prefix}-id": MSG_ID, f"{prefix}-timestamp": ts, f"{prefix}-signature": signature}


OLD, AHEAD = str(int(NOW) - 301), str(int(NOW) + 301)
CASES: list[Case] = [
    ("valid", hdrs(v1()), BODY, None),
    ("svix twins", hdrs(v1(), prefix="svix"), BODY, None),
    ("space-separated list, second matches", hdrs(f"v1,AAAA {v1()}"), BODY, None),
    ("list with v1a and v1", hdrs(f"{v1a()} {v1()}"), BODY, None),
    ("tampered body", hdrs(v1()), BODY + b" ", "bad_signature"),
    ("wrong secret", hdrs(v1(b"x" * 32)), BODY, "bad_signature"),
    ("secret used undecoded", hdrs(v1(SECRET.encode())), BODY, "bad_signature"),
    ("stale timestamp", hdrs(v1(ts=OLD), OLD), BODY, "stale_timestamp"),
    ("future timestamp", hdrs(v1(ts=AHEAD), AHEAD), BODY, "future_timestamp"),
    ("missing signature", {"webhook-id": MSG_ID, "webhook-timestamp": TS}, BODY, "missing_header"),
    ("missing id", {"webhook-timestamp": TS, "webhook-signature": v1()}, BODY, "missing_header"),
    (
        "missing timestamp",
        {"webhook-id": MSG_ID, "webhook-signature": v1()},
        BODY,
        "missing_header",
    ),
    ("non-numeric timestamp", hdrs(v1(), "17e8"), BODY, "malformed_header"),
    ("no comma", hdrs("garbage"), BODY, "malformed_header"),
    ("base64 garbage", hdrs("v1,@@@@ v1a,####"), BODY, "malformed_header"),
    ("unknown version only", hdrs("v2,AAAA"), BODY, "malformed_header"),
]


@table(CASES)
def test_vectors(headers: dict[str, str], body: bytes, reason: str | None) -> None:
    result = run_case("standard-webhooks", make_ctx([SECRET, WHPK]), headers, body, reason)
    if result is not None:
        assert (result.event_id, result.signed_timestamp) == (MSG_ID, NOW)


def test_svix_published_vector() -> None:
    ctx = make_ctx(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], {"tolerance_s": 1e10})
    headers = {
        "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "svix-timestamp": "1614265330",
        "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert run_case("standard-webhooks", ctx, headers, b'{"test": 2432232314}', None)


def test_rotation_and_key_ids() -> None:
    verifier = build_verifier("standard-webhooks", make_ctx([OTHER, SECRET, WHPK]))
    assert verifier.verify(req(hdrs(v1()), BODY), NOW).key_id == "SECRET_2"
    assert verifier.verify(req(hdrs(v1a()), BODY), NOW).key_id == "SECRET_3"


def test_v1a_only_public_key() -> None:
    verifier = build_verifier("standard-webhooks", make_ctx([WHPK]))
    assert verifier.verify(req(hdrs(v1a()), BODY), NOW).key_id == "SECRET_1"
    run_case("standard-webhooks", make_ctx([WHPK]), hdrs(v1()), BODY, "bad_signature")
    bad = "v1a," + base64.b64encode(ED_KEY.sign(b"other")).decode()
    run_case("standard-webhooks", make_ctx([WHPK]), hdrs(bad), BODY, "bad_signature")


def test_bad_public_key_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_verifier("standard-webhooks", make_ctx(["whpk_short"]))
    assert info.value.key == "sources.test.secrets"


def test_unknown_option() -> None:
    with pytest.raises(ConfigError) as info:
        build_verifier("standard-webhooks", make_ctx([SECRET], {"header": "x"}))
    assert info.value.key == "sources.test.verify.header"


def test_round_trip_v1() -> None:
    ctx = make_ctx([SECRET])
    headers = sign_request("standard-webhooks", ctx, BODY, NOW, event_id=MSG_ID)
    assert headers == hdrs(v1())
    assert build_verifier("standard-webhooks", ctx).verify(req(headers, BODY), NOW).key_id


def test_round_trip_v1a(tmp_path: Path) -> None:
    key_file = write_pem_private(tmp_path / "ed.pem", ED_KEY)
    ctx = make_ctx([WHPK], {"signing_key_file": str(key_file)})
    headers = sign_request("standard-webhooks", ctx, BODY, NOW, event_id=MSG_ID)
    assert headers["webhook-signature"] == v1a()
    result = build_verifier("standard-webhooks", ctx).verify(req(headers, BODY), NOW)
    assert result.key_id == "SECRET_1"


def test_signing_with_public_key_only_needs_key_file() -> None:
    with pytest.raises(ConfigError) as info:
        sign_request("standard-webhooks", make_ctx([WHPK]), BODY, NOW)
    assert info.value.key == "sources.test.verify.signing_key_file"
