"""Standard Webhooks (standardwebhooks.com), symmetric ``v1``: the one implementation.

The gateway verifies providers that sign this way (``gateway/verify/standard_webhooks.py``
adds the request checks, the ``svix-*`` twins and ``v1a`` Ed25519); the fan-out's HTTP
sink signs its deliveries with it, and the demo receiver checks them with it. ::

    webhook-id:        msg_...                      (the event id)
    webhook-timestamp: 1767225600                   (unix seconds)
    webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")> [v1,...]

with key = base64-decode of the secret after its ``whsec_`` prefix. The signature
header is a space-separated list; a receiver accepts any entry any live key matches,
which is how secrets rotate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Sequence

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
VERSION = "v1"


def decode_secret(secret: str | bytes) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (padding optional).

    ValueError, naming nothing secret, if it is not one."""
    text = secret.decode("latin-1") if isinstance(secret, bytes) else secret
    text = text.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode((text + "=" * (-len(text) % 4)).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError(f"not a {SECRET_PREFIX}<base64> secret") from None
    if not key:
        raise ValueError("empty secret")
    return key


def signed_content(msg_id: str | bytes, timestamp: str | bytes, body: bytes) -> bytes:
    """``{id}.{timestamp}.{body}``: what the signature covers."""
    mid = msg_id.encode("latin-1") if isinstance(msg_id, str) else msg_id
    ts = timestamp.encode("ascii") if isinstance(timestamp, str) else timestamp
    return b"%s.%s.%s" % (mid, ts, body)


class Keys:
    """HMAC keys prepared once (rotation: several live at once), each with its name."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        self._bases = [(key_id, hmac.new(key, digestmod=hashlib.sha256)) for key_id, key in keys]

    def __bool__(self) -> bool:
        return bool(self._bases)

    def _digest(self, index: int, content: bytes) -> bytes:
        mac = self._bases[index][1].copy()
        mac.update(content)
        return mac.digest()

    def sign(self, content: bytes) -> str:
        """One ``v1,<base64>`` entry with the first key (the one a sender signs with)."""
        return f"{VERSION}," + base64.b64encode(self._digest(0, content)).decode("ascii")

    def find(self, content: bytes, candidates: Iterable[bytes]) -> str | None:
        """The name of the first key whose MAC equals a candidate (constant-time compare)."""
        wanted = list(candidates)
        for index, (key_id, _) in enumerate(self._bases):
            digest = self._digest(index, content)
            if any(hmac.compare_digest(digest, c) for c in wanted):
                return key_id
        return None


def entries(header: str) -> list[tuple[str, str]]:
    """``(version, signature)`` of each well-formed ``version,signature`` entry."""
    out = []
    for item in header.split():
        version, sep, signature = item.partition(",")
        if sep and version and signature:
            out.append((version, signature))
    return out


def v1_candidates(found: Iterable[tuple[str, str]]) -> list[bytes]:
    """The decoded ``v1`` signatures (other versions and undecodable entries left out)."""
    out = []
    for version, text in found:
        if version != VERSION:
            continue
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            continue
        if raw:
            out.append(raw)
    return out


def sign(keys: Keys, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers a sender attaches (one ``v1`` entry, with the first key)."""
    ts = str(timestamp)
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: keys.sign(signed_content(msg_id, ts, body)),
    }


def verify_signature(key: bytes, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """True if any ``v1`` entry of `header` is `key`'s signature of the content.

    Signature only: the caller checks the timestamp's window (the gateway does)."""
    try:
        content = signed_content(msg_id, timestamp, body)
    except UnicodeEncodeError:
        return False
    return Keys([("", key)]).find(content, v1_candidates(entries(header))) is not None
