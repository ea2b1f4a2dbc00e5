"""Asymmetric keys: loading (PEM, certificates, JWKS) and signature checks.

The algorithm always follows from the key type, never from a request header:
EC -> ECDSA with SHA-256 (DER or raw r||s accepted), RSA -> PKCS#1 v1.5 with
SHA-256, Ed25519 -> Ed25519.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.verify.common import Options

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
JWKS_FETCH_TIMEOUT_S = 5.0


def public_key(opts: Options, name: str) -> PublicKey | None:
    """The public key (PEM public key or PEM certificate) in the file option `name` names."""
    data = opts.file_bytes(name)
    if data is None:
        return None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise opts.fail(name, "not a PEM public key or certificate") from None
    return _supported(opts, name, key)


def private_key(opts: Options, name: str) -> PrivateKey | None:
    data = opts.file_bytes(name)
    if data is None:
        return None
    try:
        key: Any = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise opts.fail(name, "not an unencrypted PEM private key") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise opts.fail(name, "unsupported key type; valid: EC, RSA, Ed25519")
    return key


def _supported(opts: Options, name: str, key: Any) -> PublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise opts.fail(name, "unsupported key type; valid: EC, RSA, Ed25519")
    return key


def jwks(opts: Options, file_option: str, url_option: str | None = None) -> list[jwt.PyJWK]:
    """The keys of a JWKS file (or URL, fetched once, now) that the options name."""
    text: str | bytes | None = opts.file_bytes(file_option)
    name = file_option
    if text is None and url_option is not None and opts.has(url_option):
        name = url_option
        text = _fetch(opts, url_option)
    if text is None:
        return []
    try:
        keys = jwt.PyJWKSet.from_dict(json.loads(text)).keys
    except (ValueError, TypeError, KeyError, jwt.PyJWTError):
        raise opts.fail(name, "not a usable JWKS (RSA, EC or OKP keys)") from None
    for key in keys:
        _supported(opts, name, key.key)
    return keys


def _fetch(opts: Options, name: str) -> bytes:
    url = opts.text(name, "")
    if not url.startswith(("https://", "http://")):
        raise opts.fail(name, "must be an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=JWKS_FETCH_TIMEOUT_S) as response:  # noqa: S310
            body: bytes = response.read(1_000_000)
            return body
    except (OSError, ValueError) as exc:
        raise opts.fail(name, f"cannot fetch the JWKS ({type(exc).__name__})") from None


def verify_signature(key: PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            return _verify_ecdsa(key, signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _verify_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    algorithm = ec.ECDSA(hashes.SHA256())
    size = (key.curve.key_size + 7) // 8
    candidates = [signature]
    if len(signature) == 2 * size:  # raw r||s (IEEE P1363, JOSE) -> DER
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        candidates.append(encode_dss_signature(r, s))
    for candidate in candidates:
        try:
            key.verify(candidate, message, algorithm)
        except (InvalidSignature, ValueError):
            continue
        return True
    return False


def sign(key: PrivateKey, message: bytes) -> bytes:
    """DER for ECDSA, PKCS#1 v1.5 for RSA (both SHA-256), raw for Ed25519."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))
