"""Shared helpers for the verifier tests: contexts, requests, provider formulas, keys on disk.

Expected signatures are computed here from the providers' published formulas with
`hmac` / `hashlib` / `base64` / `cryptography` directly, never with the signers
under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.verify import build_verifier
from gateway.verify.base import BuildContext, InboundRequest, Secret, VerifiedRequest
from schemas.errors import VerificationError

NOW = 1_700_000_000.0
TS = str(int(NOW))
WHERE = "sources.test"


def make_ctx(
    secrets: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> BuildContext:
    """Secrets get key ids SECRET_1, SECRET_2, ... in order."""
    return BuildContext(
        where=WHERE,
        secrets=[Secret(f"SECRET_{i}", s.encode("utf-8")) for i, s in enumerate(secrets, 1)],
        options=dict(options or {}),
        env=dict(env or {}),
    )


def req(headers: Mapping[str, str], body: bytes) -> InboundRequest:
    return InboundRequest(headers={k.lower(): v for k, v in headers.items()}, body=body)


def verify(
    scheme: str,
    ctx: BuildContext,
    headers: Mapping[str, str],
    body: bytes,
    now: float = NOW,
) -> VerifiedRequest:
    return build_verifier(scheme, ctx).verify(req(headers, body), now)


def assert_rejected(
    scheme: str,
    ctx: BuildContext,
    headers: Mapping[str, str],
    body: bytes,
    reason: str,
    *,
    now: float = NOW,
) -> None:
    with pytest.raises(VerificationError) as info:
        verify(scheme, ctx, headers, body, now)
    assert info.value.reason == reason
    for value in headers.values():  # no header value (signature, token) leaks
        if len(value) > 3:
            assert value not in str(info.value)


def hmac_digest(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, message, getattr(hashlib, algorithm)).digest()


def hmac_hex(key: str | bytes, message: bytes) -> str:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return hmac_digest(raw, message).hex()


def hmac_b64(key: str | bytes, message: bytes) -> str:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return base64.b64encode(hmac_digest(raw, message)).decode("ascii")


def dumps(obj: Any) -> bytes:
    """A provider-looking body: pretty, with spaces, so re-serialisation changes it."""
    return json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8")


def write_pem_public(path: Path, key: Any) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def write_pem_private(path: Path, key: Any) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_jwks(path: Path, keys: Mapping[str, Any]) -> Path:
    """A JWKS of the public halves of `keys` (kid -> private key)."""
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    entries = []
    for kid, key in keys.items():
        algo = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
        entry = json.loads(algo.to_jwk(key.public_key()))
        entry["kid"] = kid
        entries.append(entry)
    path.write_text(json.dumps({"keys": entries}))
    return path


Case = tuple[str, dict[str, str], bytes, "str | None"]


def run_case(
    scheme: str, ctx: BuildContext, headers: dict[str, str], body: bytes, reason: str | None
) -> VerifiedRequest | None:
    """Verify and expect success (`reason` None) or that rejection reason."""
    if reason is None:
        return verify(scheme, ctx, headers, body)
    assert_rejected(scheme, ctx, headers, body, reason)
    return None


def table(cases: Sequence[Case]) -> pytest.MarkDecorator:
    """`pytest.mark.parametrize` over (headers, body, reason) with the case names as ids."""
    return pytest.mark.parametrize(
        ("headers", "body", "reason"), [c[1:] for c in cases], ids=[c[0] for c in cases]
    )
