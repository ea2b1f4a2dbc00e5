"""The declarative `hmac` scheme: every option, against hand-computed vectors."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gateway.verify import build_verifier, sign_request
from schemas.errors import ConfigError
from tests.verify_vectors import NOW, TS, hmac_digest, make_ctx, req, run_case

SECRET = "declarative-secret"
BODY = b'{"id":"evt_1","type":"thing.happened"}\xff'  # not even valid UTF-8


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


KEY = b"\x00\x01binary-key\xfe"
WHSEC = "whsec_" + b64(KEY)

# (name, options, headers, expected reason or None)
VECTORS: list[tuple[str, dict[str, Any], dict[str, str], str | None]] = [
    (
        "plain hex",
        {"header": "X-Sig"},
        {"X-Sig": hmac_digest(SECRET.encode(), BODY).hex()},
        None,
    ),
    (
        "sha512 base64 with prefix",
        {"header": "X-Sig", "algorithm": "sha512", "encoding": "base64", "prefix": "sha512="},
        {"X-Sig": "sha512=" + b64(hmac_digest(SECRET.encode(), BODY, "sha512"))},
        None,
    ),
    (
        "sha1",
        {"header": "X-Sig", "algorithm": "sha1"},
        {"X-Sig": hmac_digest(SECRET.encode(), BODY, "sha1").hex()},
        None,
    ),
    (
        "kv with custom keys and separator",
        {
            "header": "Sig",
            "format": "kv",
            "kv_separator": ";",
            "signature_key": "s",
            "timestamp_key": "ts",
            "template": "{timestamp}:{body}",
        },
        {"Sig": f"ts={TS};s=" + hmac_digest(SECRET.encode(), TS.encode() + b":" + BODY).hex()},
        None,
    ),
    (
        "list with id and timestamp headers",
        {
            "header": "Sig",
            "format": "list",
            "version": "v2",
            "timestamp_header": "Ts",
            "id_header": "Id",
            "template": "{id}|{timestamp}|{body}",
            "encoding": "base64",
        },
        {
            "Sig": "v1,AAAA v2,"
            + b64(hmac_digest(SECRET.encode(), b"m1|" + TS.encode() + b"|" + BODY)),
            "Ts": TS,
            "Id": "m1",
        },
        None,
    ),
    (
        "list with only other versions",
        {"header": "Sig", "format": "list"},
        {"Sig": "v9," + hmac_digest(SECRET.encode(), BODY).hex()},
        "malformed_header",
    ),
    (
        "signed id header missing",
        {"header": "Sig", "id_header": "Id", "template": "{id}.{body}"},
        {"Sig": "00"},
        "missing_header",
    ),
    (
        "literal braces in template",
        {"header": "Sig", "template": "{{{body}}}"},
        {"Sig": hmac_digest(SECRET.encode(), b"{" + BODY + b"}").hex()},
        None,
    ),
]


@pytest.mark.parametrize(
    ("options", "headers", "reason"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_vectors(options: dict[str, Any], headers: dict[str, str], reason: str | None) -> None:
    run_case("hmac", make_ctx([SECRET], options), headers, BODY, reason)


def test_tampered_body_wrong_secret_and_missing_header_are_refused() -> None:
    options = {"header": "X-Sig", "timestamp_header": "Ts", "template": "{timestamp}.{body}"}
    ctx = make_ctx([SECRET], options)
    good = hmac_digest(SECRET.encode(), TS.encode() + b"." + BODY).hex()
    assert run_case("hmac", ctx, {"X-Sig": good, "Ts": TS}, BODY, None) is not None
    run_case("hmac", ctx, {"X-Sig": good, "Ts": TS}, BODY + b" ", "bad_signature")  # tampered
    wrong = hmac_digest(b"another-secret", TS.encode() + b"." + BODY).hex()
    run_case("hmac", ctx, {"X-Sig": wrong, "Ts": TS}, BODY, "bad_signature")
    run_case("hmac", ctx, {"Ts": TS}, BODY, "missing_header")
    run_case("hmac", ctx, {"X-Sig": "not-hex!", "Ts": TS}, BODY, "malformed_header")


def test_base64_key_after_prefix() -> None:
    options = {"header": "Sig", "key_encoding": "base64", "key_prefix": "whsec_"}
    headers = {"Sig": hmac_digest(KEY, BODY).hex()}
    assert run_case("hmac", make_ctx([WHSEC], options), headers, BODY, None) is not None
    # the same secret as UTF-8 bytes is a different key
    run_case("hmac", make_ctx([WHSEC], {"header": "Sig"}), headers, BODY, "bad_signature")


def test_timestamp_window_both_ways() -> None:
    options = {"header": "Sig", "timestamp_header": "Ts", "template": "{timestamp}.{body}",
               "tolerance_s": 10}  # fmt: skip
    ctx = make_ctx([SECRET], options)
    for ts, reason in ((int(NOW) - 11, "stale_timestamp"), (int(NOW) + 11, "future_timestamp")):
        sig = hmac_digest(SECRET.encode(), f"{ts}.".encode() + BODY).hex()
        run_case("hmac", ctx, {"Sig": sig, "Ts": str(ts)}, BODY, reason)


def test_unsigned_timestamp_is_not_checked() -> None:
    options = {"header": "Sig", "timestamp_header": "Ts"}
    headers = {"Sig": hmac_digest(SECRET.encode(), BODY).hex(), "Ts": "0"}
    result = run_case("hmac", make_ctx([SECRET], options), headers, BODY, None)
    assert result is not None and result.signed_timestamp is None


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "verify.header"),
        ({"header": "S", "algorithm": "md5"}, "verify.algorithm"),
        ({"header": "S", "encoding": "base32"}, "verify.encoding"),
        ({"header": "S", "format": "xml"}, "verify.format"),
        ({"header": "S", "key_encoding": "latin-1"}, "verify.key_encoding"),
        ({"header": "S", "tolerance_s": "300"}, "verify.tolerance_s"),
        ({"header": "S", "tolerance_s": -1}, "verify.tolerance_s"),
        ({"header": "S", "tolerance_s": True}, "verify.tolerance_s"),
        ({"header": "S", "template": "{body}{nope}"}, "verify.template"),
        ({"header": "S", "template": "{timestamp}{body}"}, "verify.template"),
        ({"header": "S", "template": "{id}{body}"}, "verify.template"),
        ({"header": "S", "template": "{body"}, "verify.template"),
        ({"header": "S", "template": "no body"}, "verify.template"),
        ({"header": "S", "format": "kv", "prefix": "v0="}, "verify.prefix"),
        ({"header": "S", "id_header": 5}, "verify.id_header"),
        ({"header": "S", "colour": "blue"}, "verify.colour"),
    ],
)
def test_config_errors(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_verifier("hmac", make_ctx([SECRET], options))
    assert info.value.key == f"sources.test.{key}"
    assert "\n" not in str(info.value)


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid: header, format"):
        build_verifier("stripe", make_ctx([SECRET], {"tolerance": 5}))


def test_needs_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        build_verifier("hmac", make_ctx([], {"header": "S"}))
    assert info.value.key == "sources.test.secrets"


def test_bad_base64_secret_is_named_not_shown() -> None:
    options = {"header": "S", "key_encoding": "base64", "key_prefix": "whsec_"}
    with pytest.raises(ConfigError) as info:
        build_verifier("hmac", make_ctx(["whsec_***not-base64***"], options))
    assert info.value.key == "sources.test.secrets"
    assert "SECRET_1" in str(info.value) and "not-base64" not in str(info.value)


@pytest.mark.parametrize("fmt", ["plain", "kv", "list"])
def test_round_trip(fmt: str) -> None:
    options = {"header": "Sig", "format": fmt, "id_header": "Id", "timestamp_header": "Ts",
               "template": "{id}.{timestamp}.{body}", "encoding": "base64"}  # fmt: skip
    ctx = make_ctx([SECRET], options)
    headers = sign_request("hmac", ctx, BODY, NOW, event_id="e-1")
    result = build_verifier("hmac", ctx).verify(req(headers, BODY), NOW)
    assert (result.event_id, result.signed_timestamp) == ("e-1", NOW)
