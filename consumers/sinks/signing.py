"""Standard Webhooks signing, the sender's side (verification for the demo receiver too).

``webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`` with
key = base64-decode of the secret after stripping ``whsec_``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret; ValueError (naming nothing secret) if bad."""
    text = secret.strip()
    text = text.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not a whsec_<base64> secret") from None
    if not key:
        raise ValueError("empty secret")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify(key: bytes, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """True if any ``v1,`` entry of a signature header matches (constant-time compare)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    expected = signature(key, msg_id, ts, body).encode()
    return any(hmac.compare_digest(entry.encode(), expected) for entry in header.split())
