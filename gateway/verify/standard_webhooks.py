"""Standard Webhooks / Svix: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

The ``svix-*`` header twins are accepted too. The signature header is a
space-separated list; any entry matching any live secret passes:

- ``v1,<base64 HMAC-SHA256>`` keyed with base64-decode(secret without ``whsec_``),
  computed by ``schemas/standard_webhooks.py`` (the fan-out signs with the same code);
- ``v1a,<base64 ed25519>`` checked with a secret of the form ``whpk_<base64 public key>``.

Signed content ``{id}.{timestamp}.{body}``; ``event_id`` = webhook-id. Options:

- ``tolerance_s``: replay window, past and future (default 300).
- ``signing_key_file``: a PEM Ed25519 private key; only the signer uses it (adds a
  ``v1a`` entry). Without it the signer signs ``v1`` with the first secret.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.verify import keys
from gateway.verify.base import BuildContext, InboundRequest, Secret, VerifiedRequest
from gateway.verify.common import (
    MAX_HEADER_CHARS,
    check_window,
    decode_b64,
    header_bytes,
    parse_unix_seconds,
    require_secrets,
)
from gateway.verify.keys import PrivateKey
from schemas import standard_webhooks as sw
from schemas.errors import ConfigError, VerificationError
from schemas.options import Options

SCHEME = "standard-webhooks"
OPTIONS = ("tolerance_s", "signing_key_file")
PUBLIC_PREFIX = b"whpk_"


@dataclass(frozen=True, slots=True)
class _Headers:
    """One family of header names: ``webhook-*`` or its ``svix-*`` twin."""

    signature: str
    timestamp: str
    id: str


FAMILIES = (
    _Headers(sw.SIGNATURE_HEADER, sw.TIMESTAMP_HEADER, sw.ID_HEADER),
    _Headers("svix-signature", "svix-timestamp", "svix-id"),
)


def _split(ctx: BuildContext) -> tuple[list[Secret], list[tuple[str, ed25519.Ed25519PublicKey]]]:
    symmetric: list[Secret] = []
    public: list[tuple[str, ed25519.Ed25519PublicKey]] = []
    for secret in require_secrets(ctx):
        if not secret.value.startswith(PUBLIC_PREFIX):
            symmetric.append(secret)
            continue
        raw = decode_b64(secret.value[len(PUBLIC_PREFIX) :].decode("latin-1"))
        if raw is None or len(raw) != 32:
            raise ConfigError(
                f"{ctx.where}.secrets", f"secret {secret.key_id} is not a whpk_ Ed25519 public key"
            )
        public.append((secret.key_id, ed25519.Ed25519PublicKey.from_public_bytes(raw)))
    return symmetric, public


def _hmac_keys(ctx: BuildContext, secrets: Sequence[Secret]) -> sw.Keys:
    ring = []
    for secret in secrets:
        try:
            ring.append((secret.key_id, sw.decode_secret(secret.value)))
        except ValueError:
            raise ConfigError(
                f"{ctx.where}.secrets",
                f"secret {secret.key_id} is not base64 after prefix {sw.SECRET_PREFIX!r}",
            ) from None
    return sw.Keys(ring)


class StandardWebhooksVerifier:
    scheme = SCHEME

    def __init__(
        self,
        ring: sw.Keys,
        public_keys: Sequence[tuple[str, ed25519.Ed25519PublicKey]],
        tolerance_s: float,
    ) -> None:
        self._ring = ring
        self._public = public_keys
        self._tolerance_s = tolerance_s

    def verify(self, request: InboundRequest, now: float) -> VerifiedRequest:
        headers = request.headers
        names = next((f for f in FAMILIES if f.signature in headers), None)
        if names is None:
            raise VerificationError("missing_header", sw.SIGNATURE_HEADER)
        value = headers[names.signature]
        if len(value) > MAX_HEADER_CHARS:
            raise VerificationError("malformed_header", f"{names.signature}: too long")
        found = sw.entries(value)
        if not found:
            raise VerificationError("malformed_header", f"{names.signature}: no signature entry")
        timestamp_text = headers.get(names.timestamp)
        if timestamp_text is None:
            raise VerificationError("missing_header", names.timestamp)
        timestamp = parse_unix_seconds(timestamp_text.strip(), names.timestamp)
        check_window(timestamp, now, self._tolerance_s, names.timestamp)
        event_id = headers.get(names.id)
        if event_id is None:
            raise VerificationError("missing_header", names.id)
        content = sw.signed_content(
            header_bytes(event_id, names.id), timestamp_text.strip(), request.body
        )
        v1 = sw.v1_candidates(found)
        v1a = [s for s in (decode_b64(t) for v, t in found if v == "v1a") if s]
        if not v1 and not v1a:
            raise VerificationError("malformed_header", f"{names.signature}: no usable entry")
        key_id = self._ring.find(content, v1) if v1 else None
        if key_id is None:
            key_id = next(
                (
                    kid
                    for kid, key in self._public
                    for sig in v1a
                    if keys.verify_signature(key, sig, content)
                ),
                None,
            )
        if key_id is None:
            raise VerificationError("bad_signature", f"{names.signature}: no secret matches")
        return VerifiedRequest(
            request=request,
            scheme=SCHEME,
            key_id=key_id,
            signed_timestamp=float(timestamp),
            event_id=event_id,
        )


def _tolerance(opts: Options) -> float:
    return opts.number("tolerance_s", 300.0)


def build(ctx: BuildContext) -> StandardWebhooksVerifier:
    opts = Options(ctx.options, f"{ctx.where}.verify", OPTIONS, ctx.base_dir)
    keys.private_key(opts, "signing_key_file")  # validated here so a bad file fails at start-up
    symmetric, public = _split(ctx)
    return StandardWebhooksVerifier(_hmac_keys(ctx, symmetric), public, _tolerance(opts))


class StandardWebhooksSigner:
    """``v1`` with the first secret (unless it is a public key), ``v1a`` with a key file."""

    def __init__(self, ring: sw.Keys | None, private: PrivateKey | None) -> None:
        self._ring = ring
        self._private = private

    def sign(
        self,
        body: bytes,
        now: float,
        *,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> dict[str, str]:
        msg_id = event_id if event_id is not None else f"msg_{uuid.uuid4().hex}"
        timestamp = str(int(now))
        content = sw.signed_content(msg_id, timestamp, body)
        entries = [self._ring.sign(content)] if self._ring is not None else []
        if self._private is not None:
            signature = keys.sign(self._private, content)
            entries.append("v1a," + base64.b64encode(signature).decode("ascii"))
        return {
            sw.SIGNATURE_HEADER: " ".join(entries),
            sw.TIMESTAMP_HEADER: timestamp,
            sw.ID_HEADER: msg_id,
        }


def build_signer(ctx: BuildContext) -> StandardWebhooksSigner:
    opts = Options(ctx.options, f"{ctx.where}.verify", OPTIONS, ctx.base_dir)
    private = keys.private_key(opts, "signing_key_file")
    if private is not None and not isinstance(private, ed25519.Ed25519PrivateKey):
        raise opts.fail("signing_key_file", "must be an Ed25519 private key")
    _tolerance(opts)
    symmetric, _ = _split(ctx)
    with_v1 = bool(symmetric) and symmetric[0] is ctx.secrets[0]
    if not with_v1 and private is None:
        raise opts.fail("signing_key_file", "required to sign: the first secret is a whpk_ key")
    return StandardWebhooksSigner(_hmac_keys(ctx, symmetric[:1]) if with_v1 else None, private)
