"""Declarative HMAC verification: one mechanism, and the presets built on it.

Scheme ``hmac`` takes every option below; the presets ``jiko``, ``fintoc``,
``stripe``, ``github``, ``shopify`` and ``slack`` (and the ``v1`` part of
``standard-webhooks``) are the same code with other defaults, and accept the
same options as overrides. Options of ``[sources.X.verify]``:

- ``header`` (required for ``hmac``): the signature header, case-insensitive.
- ``format``: ``plain`` (default; the header is the signature, after ``prefix``),
  ``kv`` (``t=..,v1=..,v1=..``: ``kv_separator`` ``,``, ``signature_key`` ``v1``,
  ``timestamp_key`` ``t``; any matching entry passes) or ``list`` (space-separated
  ``<version>,<sig>`` entries, ``version`` ``v1``; any matching entry passes).
- ``prefix``: stripped from a ``plain`` header value, e.g. ``sha256=`` (default none).
- ``timestamp_header``, ``id_header``, ``type_header``: headers that carry the signed
  timestamp, the event id and the event type (a name or a list, first present wins).
- ``template``: the signed content over ``{body}``, ``{timestamp}``, ``{id}``
  (default ``{body}``; ``{{`` / ``}}`` are literal braces).
- ``algorithm``: ``sha1`` | ``sha256`` (default) | ``sha512``.
- ``encoding``: ``hex`` (default, either case) | ``base64`` (standard, padded).
- ``key_encoding``: ``utf-8`` (default: the secret's bytes) | ``base64`` (decode the
  secret after stripping ``key_prefix``, e.g. ``whsec_``).
- ``tolerance_s``: replay window in seconds, past and future (default 300); applied
  only when the template signs ``{timestamp}``.
"""

from __future__ import annotations

import base64
import hmac
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from gateway.verify.base import BuildContext, InboundRequest, VerifiedRequest
from gateway.verify.common import (
    MAX_HEADER_CHARS,
    check_window,
    decode_b64,
    decode_hex,
    header_bytes,
    parse_unix_seconds,
    require_secrets,
)
from gateway.verify.hmac_spec import HmacSpec, hmac_keys, parse_spec, render
from schemas.errors import VerificationError


# Not frozen, and its own __init__ (compiled; see schemas/envelope.py): one per request.
@dataclass(slots=True, init=False)
class Signed:
    """A parsed request: the signed message and the candidate signatures."""

    message: bytes
    entries: tuple[tuple[str, str], ...]  # (version or key, encoded signature)
    timestamp: int | None
    event_id: str | None
    event_type: str | None

    def __init__(
        self,
        message: bytes,
        entries: tuple[tuple[str, str], ...],
        timestamp: int | None,
        event_id: str | None,
        event_type: str | None,
    ) -> None:
        self.message = message
        self.entries = entries
        self.timestamp = timestamp
        self.event_id = event_id
        self.event_type = event_type


def _keyed(key: bytes, algorithm: str) -> Any:
    """A MAC keyed once, to `copy()` per message. `hmac.HMAC` wraps OpenSSL's HMAC object
    (``_hmac``) in Python methods; that object has the same copy/update/digest, in C, at
    half the cost per message. Without OpenSSL's HMAC, the `hmac.HMAC` itself."""
    mac = hmac.new(key, digestmod=algorithm)
    return getattr(mac, "_hmac", None) or mac


class KeyRing:
    """HMAC keys prepared once; `find` returns the key id whose MAC matches a candidate."""

    def __init__(self, keys: Sequence[tuple[str, bytes]], algorithm: str) -> None:
        self._bases = [(key_id, _keyed(key, algorithm)) for key_id, key in keys]

    def __bool__(self) -> bool:
        return bool(self._bases)

    def first_digest(self, message: bytes) -> bytes:
        mac = self._bases[0][1].copy()
        mac.update(message)
        digest: bytes = mac.digest()
        return digest

    def find(self, message: bytes, candidates: Sequence[bytes]) -> str | None:
        for key_id, base in self._bases:
            mac = base.copy()
            mac.update(message)
            digest: bytes = mac.digest()
            if any(hmac.compare_digest(digest, c) for c in candidates):
                return key_id
        return None


class HmacVerifier:
    def __init__(self, spec: HmacSpec, keys: Sequence[tuple[str, bytes]]) -> None:
        self.scheme = spec.scheme
        self.spec = spec
        self.ring = KeyRing(keys, spec.algorithm)
        self._header = spec.header.lower()
        self._ts_header = (spec.timestamp_header or "").lower()
        self._id_headers = tuple(h.lower() for h in spec.id_headers)
        self._type_headers = tuple(h.lower() for h in spec.type_headers)
        # settled once: what the template signs, and how signatures are written
        signs = spec.signs
        self._signs_timestamp = "timestamp" in signs
        self._signs_id = "id" in signs
        self._body_only = spec.template == (("body", b""),)  # the message is the body itself
        self._wanted = spec.version if spec.format == "list" else None
        self._decode = decode_hex if spec.encoding == "hex" else decode_b64

    def verify(self, request: InboundRequest, now: float) -> VerifiedRequest:
        signed = self.parse(request, now)
        candidates = self.candidates(signed)
        if not candidates:
            raise VerificationError("malformed_header", f"{self._header}: no usable signature")
        key_id = self.ring.find(signed.message, candidates)
        if key_id is None:
            raise VerificationError("bad_signature", f"{self._header}: no secret matches")
        return VerifiedRequest(
            request=request,
            scheme=self.scheme,
            key_id=key_id,
            signed_timestamp=None if signed.timestamp is None else float(signed.timestamp),
            event_id=signed.event_id,
            event_type=signed.event_type,
        )

    def parse(self, request: InboundRequest, now: float) -> Signed:
        spec, headers = self.spec, request.headers
        value = headers.get(self._header)
        if value is None:
            raise VerificationError("missing_header", self._header)
        if len(value) > MAX_HEADER_CHARS:
            raise VerificationError("malformed_header", f"{self._header}: too long")
        timestamp_text: str | None = None
        if spec.format == "plain":
            if not value.startswith(spec.prefix):
                raise VerificationError("malformed_header", f"{self._header}: wrong prefix")
            entries: tuple[tuple[str, str], ...] = (("", value[len(spec.prefix) :].strip()),)
        elif spec.format == "kv":
            entries, timestamp_text = self._parse_kv(value)
        else:
            entries = self._parse_list(value)
        if self._ts_header:
            timestamp_text = headers.get(self._ts_header)
        event_id = _first(headers, self._id_headers)
        timestamp: int | None = None
        signed_ts = b""
        if self._signs_timestamp:
            where = self._ts_header or self._header
            if timestamp_text is None:
                raise VerificationError("missing_header", where)
            timestamp = parse_unix_seconds(timestamp_text.strip(), where)
            check_window(timestamp, now, spec.tolerance_s, where)
            signed_ts = timestamp_text.strip().encode("ascii")
        signed_id = b""
        if self._signs_id:
            if event_id is None:
                raise VerificationError("missing_header", self._id_headers[0])
            signed_id = header_bytes(event_id, self._id_headers[0])
        if self._body_only:
            message = request.body
        else:
            message = render(spec.template, request.body, signed_ts, signed_id)
        event_type = _first(headers, self._type_headers)
        return Signed(message, entries, timestamp, event_id, event_type)

    def _parse_kv(self, value: str) -> tuple[tuple[tuple[str, str], ...], str | None]:
        spec = self.spec
        signatures: list[tuple[str, str]] = []
        timestamps: list[str] = []
        for item in value.split(spec.kv_separator):
            key, sep, val = item.partition("=")
            key = key.strip()
            if not sep:
                continue
            if key == spec.timestamp_key:
                timestamps.append(val.strip())
            elif key == spec.signature_key:
                signatures.append((key, val.strip()))
        if len(timestamps) > 1:
            raise VerificationError("malformed_header", f"{self._header}: repeated timestamp")
        if not signatures:
            raise VerificationError("malformed_header", f"{self._header}: no signature entry")
        return tuple(signatures), (timestamps[0] if timestamps else None)

    def _parse_list(self, value: str) -> tuple[tuple[str, str], ...]:
        entries = []
        for item in value.split():
            version, sep, sig = item.partition(",")
            if sep and version and sig:
                entries.append((version, sig))
        if not entries:
            raise VerificationError("malformed_header", f"{self._header}: no signature entry")
        return tuple(entries)

    def candidates(self, signed: Signed) -> list[bytes]:
        """Decoded signatures of this scheme's version (other versions are left out)."""
        wanted, decode = self._wanted, self._decode
        out = []
        for version, text in signed.entries:
            if wanted is not None and version != wanted:
                continue
            raw = decode(text)
            if raw:
                out.append(raw)
        return out


def _first(headers: Mapping[str, str], names: Sequence[str]) -> str | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            return value
    return None


class HmacSigner:
    def __init__(self, spec: HmacSpec, keys: Sequence[tuple[str, bytes]]) -> None:
        self.spec = spec
        self.ring = KeyRing(keys[:1], spec.algorithm)

    def entry(self, body: bytes, timestamp: str, event_id: str) -> tuple[str, bytes]:
        """The encoded signature over the message, and the message."""
        message = render(
            self.spec.template, body, timestamp.encode("ascii"), event_id.encode("latin-1")
        )
        digest = self.ring.first_digest(message)
        if self.spec.encoding == "hex":
            return digest.hex(), message
        return base64.b64encode(digest).decode("ascii"), message

    def sign(
        self,
        body: bytes,
        now: float,
        *,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> dict[str, str]:
        spec = self.spec
        timestamp = str(int(now))
        if event_id is None and "id" in spec.signs:
            event_id = f"msg_{uuid.uuid4().hex}"
        signature, _ = self.entry(body, timestamp, event_id or "")
        if spec.format == "plain":
            value = spec.prefix + signature
        elif spec.format == "kv":
            sep = spec.kv_separator
            value = f"{spec.timestamp_key}={timestamp}{sep}{spec.signature_key}={signature}"
        else:
            value = f"{spec.version},{signature}"
        headers = {spec.header: value}
        if spec.timestamp_header:
            headers[spec.timestamp_header] = timestamp
        if spec.id_headers and event_id is not None:
            headers[spec.id_headers[0]] = event_id
        if spec.type_headers and event_type is not None:
            headers[spec.type_headers[0]] = event_type
        return headers


def build_hmac(ctx: BuildContext, *, scheme: str = "hmac") -> HmacVerifier:
    spec = parse_spec(scheme, ctx.where, ctx.options)
    return HmacVerifier(spec, hmac_keys(spec, ctx.where, require_secrets(ctx)))


def build_hmac_signer(ctx: BuildContext, *, scheme: str = "hmac") -> HmacSigner:
    spec = parse_spec(scheme, ctx.where, ctx.options)
    return HmacSigner(spec, hmac_keys(spec, ctx.where, require_secrets(ctx)))


def preset(scheme: str) -> partial[HmacVerifier]:
    return partial(build_hmac, scheme=scheme)


def preset_signer(scheme: str) -> partial[HmacSigner]:
    return partial(build_hmac_signer, scheme=scheme)
