"""Standard Webhooks / Svix: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

The ``svix-*`` header twins are accepted too. The signature header is a
space-separated list; any entry matching any live secret passes:

- ``v1,<base64 HMAC-SHA256>`` keyed with base64-decode(secret without ``whsec_``)
  (the declarative HMAC mechanism with ``format = "list"``);
- ``v1a,<base64 ed25519>`` checked with a secret of the form ``whpk_<base64 public key>``.

Signed content ``{id}.{timestamp}.{body}``; ``event_id`` = webhook-id. Options:

- ``tolerance_s``: replay window, past and future (default 300).
- ``signing_key_file``: a PEM Ed25519 private key; only the signer uses it (adds a
  ``v1a`` entry). Without it the signer signs ``v1`` with the first secret.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.verify import keys
from gateway.verify.base import BuildContext, InboundRequest, Secret, VerifiedRequest
from gateway.verify.common import decode_b64, require_secrets
from gateway.verify.hmac_scheme import HmacSigner, HmacVerifier
from gateway.verify.hmac_spec import HmacSpec, hmac_keys, parse_spec
from gateway.verify.keys import PrivateKey
from schemas.errors import ConfigError, VerificationError
from schemas.options import Options

SCHEME = "standard-webhooks"
OPTIONS = ("tolerance_s", "signing_key_file")
PUBLIC_PREFIX = b"whpk_"


def _spec(ctx: BuildContext, opts: Options, family: str) -> HmacSpec:
    options = {
        "header": f"{family}-signature",
        "format": "list",
        "version": "v1",
        "timestamp_header": f"{family}-timestamp",
        "id_header": f"{family}-id",
        "template": "{id}.{timestamp}.{body}",
        "encoding": "base64",
        "key_encoding": "base64",
        "key_prefix": "whsec_",
        "tolerance_s": opts.number("tolerance_s", 300.0),
    }
    return parse_spec(SCHEME, ctx.where, options)


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


class StandardWebhooksVerifier:
    scheme = SCHEME

    def __init__(
        self,
        families: Sequence[HmacVerifier],
        public_keys: Sequence[tuple[str, ed25519.Ed25519PublicKey]],
    ) -> None:
        self._families = families
        self._public = public_keys

    def verify(self, request: InboundRequest, now: float) -> VerifiedRequest:
        family = next((f for f in self._families if f.spec.header in request.headers), None)
        if family is None:
            raise VerificationError("missing_header", "webhook-signature")
        signed = family.parse(request, now)
        v1 = family.candidates(signed)
        v1a = [s for s in (decode_b64(t) for v, t in signed.entries if v == "v1a") if s]
        if not v1 and not v1a:
            raise VerificationError("malformed_header", f"{family.spec.header}: no usable entry")
        key_id = family.ring.find(signed.message, v1) if v1 else None
        if key_id is None:
            key_id = next(
                (
                    kid
                    for kid, key in self._public
                    for sig in v1a
                    if keys.verify_signature(key, sig, signed.message)
                ),
                None,
            )
        if key_id is None:
            raise VerificationError("bad_signature", f"{family.spec.header}: no secret matches")
        return VerifiedRequest(
            request=request,
            scheme=SCHEME,
            key_id=key_id,
            signed_timestamp=None if signed.timestamp is None else float(signed.timestamp),
            event_id=signed.event_id,
        )


def build(ctx: BuildContext) -> StandardWebhooksVerifier:
    opts = Options(ctx.options, f"{ctx.where}.verify", OPTIONS, ctx.base_dir)
    keys.private_key(opts, "signing_key_file")  # validated here so a bad file fails at start-up
    symmetric, public = _split(ctx)
    families = []
    for family in ("webhook", "svix"):
        spec = _spec(ctx, opts, family)
        families.append(HmacVerifier(spec, hmac_keys(spec, ctx.where, symmetric)))
    return StandardWebhooksVerifier(families, public)


class StandardWebhooksSigner:
    """``v1`` with the first secret (unless it is a public key), ``v1a`` with a key file."""

    def __init__(self, hmac_signer: HmacSigner, with_v1: bool, private: PrivateKey | None) -> None:
        self._hmac = hmac_signer
        self._with_v1 = with_v1
        self._private = private

    def sign(
        self,
        body: bytes,
        now: float,
        *,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> dict[str, str]:
        headers = self._hmac.sign(body, now, event_id=event_id, event_type=event_type)
        entries = [headers["webhook-signature"]] if self._with_v1 else []
        if self._private is not None:
            _, message = self._hmac.entry(body, headers["webhook-timestamp"], headers["webhook-id"])
            signature = keys.sign(self._private, message)
            entries.append("v1a," + base64.b64encode(signature).decode("ascii"))
        headers["webhook-signature"] = " ".join(entries)
        return headers


def build_signer(ctx: BuildContext) -> StandardWebhooksSigner:
    opts = Options(ctx.options, f"{ctx.where}.verify", OPTIONS, ctx.base_dir)
    private = keys.private_key(opts, "signing_key_file")
    if private is not None and not isinstance(private, ed25519.Ed25519PrivateKey):
        raise opts.fail("signing_key_file", "must be an Ed25519 private key")
    symmetric, _ = _split(ctx)
    with_v1 = bool(symmetric) and symmetric[0] is ctx.secrets[0]
    if not with_v1 and private is None:
        raise opts.fail("signing_key_file", "required to sign: the first secret is a whpk_ key")
    spec = _spec(ctx, opts, "webhook")
    ring = hmac_keys(spec, ctx.where, symmetric) if with_v1 else [("", b"unused")]
    return StandardWebhooksSigner(HmacSigner(spec, ring), with_v1, private)
