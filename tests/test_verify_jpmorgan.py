"""J.P. Morgan: static headers, bearer JWT, body signatures (EC DER/P1363, RSA); all must pass."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.verify import build_verifier, sign_request
from gateway.verify.base import BuildContext
from schemas.errors import ConfigError
from tests.verify_vectors import (
    NOW,
    assert_rejected,
    ec_key,
    make_ctx,
    req,
    rsa_key,
    verify,
    write_jwks,
    write_pem_private,
    write_pem_public,
)

EcPrivateKey = ec.EllipticCurvePrivateKey
RsaPrivateKey = rsa.RSAPrivateKey
BODY = json.dumps(
    {
        "eventId": "0b6a2d5e-6c3b-4f4f-9f0e-1d2c3b4a5f60",
        "eventType": "TRANSACTION_COMPLETED",
        "resources": [{"id": "txn_1", "status": "COMPLETED", "amount": 125.5}],
    }
).encode()
ENV = {"JPM_KEY1": "CustomValue1", "JPM_KEY2": "CustomValue2"}
ISSUER, AUDIENCE = "https://idp.example/", "webhook-bridge"


@dataclass
class Keys:
    ec: EcPrivateKey
    rsa: RsaPrivateKey
    expired: EcPrivateKey
    dir: Path

    def signature_options(self, **extra: Any) -> dict[str, Any]:
        return {
            "keys": [
                {"id": "k-ec", "pem_file": str(self.dir / "ec.pub.pem"),
                 "expires": "2099-01-01T00:00:00Z"},
                {"id": "k-rsa", "pem_file": str(self.dir / "rsa.pub.pem")},
                {"id": "k-old", "pem_file": str(self.dir / "old.pub.pem"),
                 "expires": "2020-01-01T00:00:00Z"},
            ],
            **extra,
        }  # fmt: skip

    def jwt_options(self, **extra: Any) -> dict[str, Any]:
        return {"jwks_file": str(self.dir / "idp.jwks"), "issuer": ISSUER, "audience": AUDIENCE,
                **extra}  # fmt: skip


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("jpm")
    k = Keys(ec_key(), rsa_key(), ec_key(), d)
    write_pem_public(d / "ec.pub.pem", k.ec)
    write_pem_public(d / "rsa.pub.pem", k.rsa)
    write_pem_public(d / "old.pub.pem", k.expired)
    write_pem_private(d / "ec.pem", k.ec)
    write_pem_private(d / "rsa.pem", k.rsa)
    write_jwks(d / "idp.jwks", {"idp-rsa": k.rsa, "idp-ec": k.ec})
    return k


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def ec_der(key: ec.EllipticCurvePrivateKey, body: bytes = BODY) -> bytes:
    return key.sign(body, ec.ECDSA(hashes.SHA256()))


def ec_p1363(key: ec.EllipticCurvePrivateKey, body: bytes = BODY) -> bytes:
    r, s = decode_dss_signature(ec_der(key, body))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def rsa_sig(key: rsa.RSAPrivateKey, body: bytes = BODY) -> bytes:
    return key.sign(body, padding.PKCS1v15(), hashes.SHA256())


def sig_ctx(k: Keys, **extra: Any) -> BuildContext:
    return make_ctx(options={"methods": ["signature"], "signature": k.signature_options(**extra)})


@pytest.mark.parametrize(
    ("name", "kid", "make", "body", "reason"),
    [
        ("EC DER", "k-ec", lambda k: ec_der(k.ec), BODY, None),
        ("EC P1363", "k-ec", lambda k: ec_p1363(k.ec), BODY, None),
        ("RSA PKCS1v15", "k-rsa", lambda k: rsa_sig(k.rsa), BODY, None),
        ("tampered body", "k-ec", lambda k: ec_der(k.ec), BODY + b" ", "bad_signature"),
        ("tampered P1363", "k-ec", lambda k: ec_p1363(k.ec), BODY[:-1], "bad_signature"),
        ("EC sig under RSA key id", "k-rsa", lambda k: ec_der(k.ec), BODY, "bad_signature"),
        ("RSA sig under EC key id", "k-ec", lambda k: rsa_sig(k.rsa), BODY, "bad_signature"),
        ("unknown key id", "k-nope", lambda k: ec_der(k.ec), BODY, "unknown_key"),
        ("expired key", "k-old", lambda k: ec_der(k.expired), BODY, "expired_key"),
        ("random bytes", "k-ec", lambda k: b"\x30" * 64, BODY, "bad_signature"),
    ],
)
def test_signature_vectors(
    keys: Keys, name: str, kid: str, make: Any, body: bytes, reason: str | None
) -> None:
    headers = {"Signature": b64(make(keys)), "Key-ID": kid}
    if reason is None:
        result = verify("jpmorgan", sig_ctx(keys), headers, body)
        assert (result.key_id, result.mode, result.scheme) == (kid, "signature", "jpmorgan")
    else:
        assert_rejected("jpmorgan", sig_ctx(keys), headers, body, reason)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Key-ID": "k-ec"}, "missing_header"),
        ({"Signature": "AAAA"}, "missing_header"),
        ({"Signature": "not base64!", "Key-ID": "k-ec"}, "malformed_header"),
        ({"Signature": "", "Key-ID": "k-ec"}, "malformed_header"),
    ],
)
def test_signature_header_problems(keys: Keys, headers: dict[str, str], reason: str) -> None:
    assert_rejected("jpmorgan", sig_ctx(keys), headers, BODY, reason)


def test_signature_keys_from_jwks_and_custom_headers(keys: Keys) -> None:
    options = {"jwks_file": str(keys.dir / "idp.jwks"), "header": "X-Sig", "key_id_header": "X-Kid",
               "encoding": "hex"}  # fmt: skip
    ctx = make_ctx(options={"signature": options})
    headers = {"X-Sig": rsa_sig(keys.rsa).hex(), "X-Kid": "idp-rsa"}
    assert verify("jpmorgan", ctx, headers, BODY).key_id == "idp-rsa"


def token(key: Any, kid: str | None = "idp-rsa", alg: str = "RS256", **claims: Any) -> str:
    payload = {"iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 60, "iat": NOW, **claims}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("good RS256", lambda k: token(k.rsa), None),
        ("good ES256", lambda k: token(k.ec, "idp-ec", "ES256"), None),
        ("within leeway", lambda k: token(k.rsa, exp=NOW - 30), None),
        ("expired", lambda k: token(k.rsa, exp=NOW - 61), "bad_token"),
        ("not yet valid", lambda k: token(k.rsa, nbf=NOW + 120), "bad_token"),
        ("no exp", lambda k: token(k.rsa, exp=None), "bad_token"),
        ("wrong audience", lambda k: token(k.rsa, aud="someone-else"), "bad_token"),
        ("wrong issuer", lambda k: token(k.rsa, iss="https://evil/"), "bad_token"),
        ("signed by other key", lambda k: token(rsa_key()), "bad_token"),
        ("unknown kid", lambda k: token(k.rsa, "idp-9"), "unknown_key"),
        ("alg none", lambda k: jwt.encode({"iss": ISSUER}, "", algorithm="none"), "bad_token"),
        ("HS256 alg confusion", lambda k: token(b"x" * 32, "idp-rsa", "HS256"), "bad_token"),
        ("garbage", lambda k: "a.b.c", "bad_token"),
    ],
)
def test_jwt_vectors(keys: Keys, name: str, make: Any, reason: str | None) -> None:
    ctx = make_ctx(options={"jwt": keys.jwt_options()})
    headers = {"Authorization": "Bearer " + make(keys)}
    if reason is None:
        assert verify("jpmorgan", ctx, headers, BODY).mode == "jwt"
    else:
        assert_rejected("jpmorgan", ctx, headers, BODY, reason)


def test_jwt_pem_file_and_header_problems(keys: Keys) -> None:
    options = {"pem_file": str(keys.dir / "rsa.pub.pem"), "issuer": ISSUER, "audience": AUDIENCE}
    ctx = make_ctx(options={"jwt": options})
    assert verify("jpmorgan", ctx, {"Authorization": "Bearer " + token(keys.rsa)}, BODY)
    assert_rejected("jpmorgan", ctx, {}, BODY, "missing_header")
    assert_rejected(
        "jpmorgan", ctx, {"Authorization": "Basic dXNlcjpwYXNz"}, BODY, "malformed_header"
    )


STATIC = {"X-CustomKey1": "JPM_KEY1", "X-CustomKey2": ["JPM_OLD", "JPM_KEY2"]}
ENV_ROT = {**ENV, "JPM_OLD": "OldValue"}


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-CustomKey1": "CustomValue1", "X-CustomKey2": "CustomValue2"}, None),
        ({"X-CustomKey1": "CustomValue1", "X-CustomKey2": "OldValue"}, None),
        ({"X-CustomKey1": "CustomValue1", "X-CustomKey2": "Wrong"}, "bad_token"),
        ({"X-CustomKey1": "CustomValue1"}, "missing_header"),
        ({"X-CustomKey1": "CustomValue", "X-CustomKey2": "CustomValue2"}, "bad_token"),
        ({"X-CustomKey1": "ŒŒŒ", "X-CustomKey2": "CustomValue2"}, "bad_token"),
    ],
)
def test_static_headers(headers: dict[str, str], reason: str | None) -> None:
    ctx = make_ctx(options={"static_headers": STATIC}, env=ENV_ROT)
    if reason is None:
        assert verify("jpmorgan", ctx, headers, BODY).mode == "static-headers"
    else:
        assert_rejected("jpmorgan", ctx, headers, BODY, reason)


def all_ctx(k: Keys) -> BuildContext:
    options = {
        "methods": ["static-headers", "jwt", "signature"],
        "static_headers": {"X-CustomKey1": "JPM_KEY1"},
        "jwt": k.jwt_options(signing_key_file=str(k.dir / "rsa.pem"), signing_key_id="idp-rsa"),
        "signature": k.signature_options(signing_key_file=str(k.dir / "ec.pem")),
    }
    return make_ctx(options=options, env=ENV)


def test_all_methods_must_pass(keys: Keys) -> None:
    ctx = all_ctx(keys)
    good = {
        "X-CustomKey1": "CustomValue1",
        "Authorization": "Bearer " + token(keys.rsa),
        "Signature": b64(ec_p1363(keys.ec)),
        "Key-ID": "k-ec",
    }
    result = verify("jpmorgan", ctx, good, BODY)
    assert (result.mode, result.key_id) == ("static-headers+jwt+signature", "k-ec")
    for name, bad, reason in [
        ("X-CustomKey1", "nope", "bad_token"),
        ("Authorization", "Bearer " + token(keys.rsa, aud="x"), "bad_token"),
        ("Signature", b64(ec_der(keys.ec, b"other")), "bad_signature"),
    ]:
        assert_rejected("jpmorgan", ctx, {**good, name: bad}, BODY, reason)


def test_round_trip_all_methods(keys: Keys) -> None:
    ctx = all_ctx(keys)
    headers = sign_request("jpmorgan", ctx, BODY, NOW)
    result = build_verifier("jpmorgan", ctx).verify(req(headers, BODY), NOW)
    assert result.mode == "static-headers+jwt+signature"


def test_round_trip_rsa_base64url(keys: Keys) -> None:
    extra = {"signing_key_file": str(keys.dir / "rsa.pem"), "signing_key_id": "k-rsa",
             "encoding": "base64url"}  # fmt: skip
    ctx = sig_ctx(keys, **extra)
    headers = sign_request("jpmorgan", ctx, BODY, NOW)
    assert build_verifier("jpmorgan", ctx).verify(req(headers, BODY), NOW).key_id == "k-rsa"


def test_signing_without_key_file_is_config_error(keys: Keys) -> None:
    with pytest.raises(ConfigError) as info:
        sign_request("jpmorgan", sig_ctx(keys), BODY, NOW)
    assert info.value.key == "sources.test.verify.signature.signing_key_file"


@pytest.mark.parametrize(
    ("options", "env", "key", "needle"),
    [
        ({}, {}, "verify.methods", "no method"),
        ({"methods": ["oauth"]}, {}, "verify.methods", "valid: static-headers, jwt, signature"),
        ({"methods": ["jwt"]}, {}, "verify.jwt", "required"),
        ({"static_headers": {"X-K": "JPM_MISSING"}}, {}, "verify.static_headers.X-K",
         "JPM_MISSING"),
        ({"static_headers": {"X-K": 5}}, {}, "verify.static_headers.X-K", "environment"),
        ({"signature": {"keys": [{"id": "a"}]}}, {}, "verify.signature.keys[0].pem_file",
         "required"),
        ({"signature": {"keys": [{"id": "a", "pem_file": "/nonexistent.pem"}]}}, {},
         "verify.signature.keys[0].pem_file", "cannot read"),
        ({"signature": {"keys": []}}, {}, "verify.signature.keys", "no key"),
        ({"signature": {"algorithm": "ES256"}}, {}, "verify.signature.algorithm", "unknown option"),
        ({"jwt": {"issuer": "x", "audience": "y"}}, {}, "verify.jwt.jwks_file", "no key"),
        ({"jwt": {"algorithms": ["HS256"]}}, {}, "verify.jwt.algorithms", "HS256"),
    ],
)  # fmt: skip
def test_config_errors(options: dict[str, Any], env: dict[str, str], key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_verifier("jpmorgan", make_ctx(options=options, env=env))
    assert info.value.key == f"sources.test.{key}"
    assert needle in info.value.problem


def test_expiry_config_errors(keys: Keys) -> None:
    for expires in ("tomorrow", "2027-01-01T00:00:00", 5):
        options = {"signature": {"keys": [{"id": "a", "pem_file": str(keys.dir / "ec.pub.pem"),
                                           "expires": expires}]}}  # fmt: skip
        with pytest.raises(ConfigError) as info:
            build_verifier("jpmorgan", make_ctx(options=options))
        assert info.value.key == "sources.test.verify.signature.keys[0].expires"


def test_static_value_never_in_errors() -> None:
    ctx = make_ctx(options={"static_headers": {"X-K": "JPM_KEY1"}}, env=ENV)
    assert_rejected("jpmorgan", ctx, {"X-K": "CustomValue1x"}, BODY, "bad_token")


def test_jwks_url_fetched_once_at_build(keys: Keys) -> None:
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(keys.dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/idp.jwks"
        options = {"jwt": {"jwks_url": url, "issuer": ISSUER, "audience": AUDIENCE}}
        verifier = build_verifier("jpmorgan", make_ctx(options=options))
    finally:
        server.shutdown()
        server.server_close()
    headers = {"Authorization": "Bearer " + token(keys.rsa)}
    assert verifier.verify(req(headers, BODY), NOW).key_id == "idp-rsa"  # server is gone


def test_jwks_url_unreachable_is_config_error() -> None:
    options = {"jwt": {"jwks_url": "http://127.0.0.1:9/jwks", "issuer": "i", "audience": "a"}}
    with pytest.raises(ConfigError) as info:
        build_verifier("jpmorgan", make_ctx(options=options))
    assert info.value.key == "sources.test.verify.jwt.jwks_url"
