"""J.P. Morgan Embedded Payments: static headers, bearer JWT, body signature; all configured pass.

Options of ``[sources.X.verify]`` (``mode`` = the methods joined by ``+``):

- ``methods``: any of ``static-headers``, ``jwt``, ``signature`` (default: the
  methods whose tables below are present).
- ``static_headers``: ``{ "X-CustomKey1" = "ENV_VAR" }`` (or a list of variables,
  any matches: rotation); the values come from the environment.
- ``jwt``: ``Authorization: Bearer <JWT>`` checked against ``jwks_file`` /
  ``jwks_url`` (loaded at start-up, 5 s timeout, then kept fresh: see below) / ``pem_file``;
  ``issuer`` and ``audience`` (required), ``leeway_s`` (60), ``algorithms``
  (``["RS256", "ES256"]``; asymmetric only); ``exp`` is required. For the signer:
  ``signing_key_file`` (PEM private key) and ``signing_key_id`` (the ``kid``).
- ``signature``: a signature over the raw body in ``header`` (``Signature``) with the
  key named by ``key_id_header`` (``Key-ID``; ``""`` tries every key), ``encoding``
  ``base64`` (default) | ``base64url`` | ``hex``; keys pinned as ``keys = [{ id, pem_file,
  expires }]`` (``expires`` RFC 3339, optional) and/or from ``jwks_file`` / ``jwks_url``.
  The algorithm follows the key: EC -> ECDSA SHA-256 (DER or raw r||s), RSA ->
  PKCS#1 v1.5 SHA-256. For the signer: ``signing_key_file``, ``signing_key_id``.
- JWKS refresh (both tables): a kid not in the JWKS starts a background reload (the
  request itself gets ``unknown_key``), and so does a JWKS older than ``jwks_max_age_s``
  (3600); at most one reload per ``jwks_refresh_min_s`` (60). A failed reload keeps the
  previous keys. See `gateway.verify.keys.JwksSource`.
"""

from __future__ import annotations

import base64
import functools
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from gateway.verify import keys
from gateway.verify.base import BuildContext, InboundRequest, VerifiedRequest
from gateway.verify.common import MAX_HEADER_CHARS, decode_b64, decode_hex
from gateway.verify.jpmorgan_jwt import BearerJwt, build_jwt
from schemas.errors import VerificationError
from schemas.options import Options

SCHEME = "jpmorgan"
OPTIONS = ("methods", "static_headers", "jwt", "signature")
METHODS = ("static-headers", "jwt", "signature")
JWKS_REFRESH_OPTIONS = ("jwks_refresh_min_s", "jwks_max_age_s")
JWT_OPTIONS = (
    "jwks_file", "jwks_url", "pem_file", "issuer", "audience", "leeway_s", "algorithms",
    "signing_key_file", "signing_key_id", *JWKS_REFRESH_OPTIONS,
)  # fmt: skip
SIGNATURE_OPTIONS = (
    "header", "key_id_header", "encoding", "keys", "jwks_file", "jwks_url", "signing_key_file",
    "signing_key_id", *JWKS_REFRESH_OPTIONS,
)  # fmt: skip


class StaticHeaders:
    def __init__(self, expected: Mapping[str, tuple[bytes, ...]]) -> None:
        self.expected = {name.lower(): values for name, values in expected.items()}
        self.display = dict(expected)

    def check(self, request: InboundRequest) -> None:
        for name, values in self.expected.items():
            value = request.headers.get(name)
            if value is None:
                raise VerificationError("missing_header", name)
            try:
                presented = value.strip().encode("latin-1")
            except UnicodeEncodeError:
                raise VerificationError("bad_token", name) from None
            if not any(hmac.compare_digest(presented, v) for v in values):
                raise VerificationError("bad_token", f"{name}: no match")


@dataclass(frozen=True, slots=True)
class PinnedKey:
    key_id: str
    key: keys.PublicKey
    expires: float | None = None


class BodySignature:
    def __init__(
        self, header: str, key_id_header: str, encoding: str, pinned: Mapping[str, PinnedKey]
    ) -> None:
        self.header = header
        self.key_id_header = key_id_header
        self.encoding = encoding
        self.pinned = dict(pinned)
        self._header = header.lower()
        self._kid_header = key_id_header.lower()

    def check(self, request: InboundRequest, now: float) -> str:
        value = request.headers.get(self._header)
        if value is None:
            raise VerificationError("missing_header", self._header)
        if len(value) > MAX_HEADER_CHARS:
            raise VerificationError("malformed_header", f"{self._header}: too long")
        text = value.strip()
        if self.encoding == "hex":
            signature = decode_hex(text)
        else:
            signature = decode_b64(text, urlsafe=self.encoding == "base64url")
        if not signature:
            raise VerificationError("malformed_header", f"{self._header}: not {self.encoding}")
        if self._kid_header:
            kid = request.headers.get(self._kid_header)
            if kid is None:
                raise VerificationError("missing_header", self._kid_header)
            pinned = self.pinned.get(kid.strip())
            if pinned is None:
                raise VerificationError("unknown_key", self._kid_header)
            candidates = [pinned]
        else:
            candidates = list(self.pinned.values())
        live = [p for p in candidates if p.expires is None or now <= p.expires]
        if not live:
            raise VerificationError("expired_key", self._kid_header or self._header)
        for pinned in live:
            if keys.verify_signature(pinned.key, signature, request.body):
                return pinned.key_id
        raise VerificationError("bad_signature", f"{self._header}: no key matches")


class _Checker(Protocol):
    def check(self, request: InboundRequest, now: float) -> str | None: ...


C = TypeVar("C", bound=_Checker)


class Rotating(Generic[C]):
    """A key-checking method that follows its JWKS: rebuilt from its options table (off the
    request path, on the source's loading thread) whenever the JWKS changes."""

    def __init__(
        self, checker: C, source: keys.JwksSource | None, rebuild: Callable[[], C]
    ) -> None:
        self.checker = checker  # swapped whole: a request sees the old or the new keys
        self.source = source
        self._rebuild = rebuild
        if source is not None:
            source.subscribe(self._on_change)

    def _on_change(self) -> None:
        self.checker = self._rebuild()  # a ConfigError keeps the old checker (logged)

    def check(self, request: InboundRequest, now: float) -> str | None:
        if self.source is None:
            return self.checker.check(request, now)
        self.source.poll()
        try:
            return self.checker.check(request, now)
        except VerificationError as exc:
            if exc.reason == "unknown_key":  # perhaps rotated: reload in the background
                self.source.refresh()
            raise


class JPMorganVerifier:
    scheme = SCHEME

    def __init__(
        self,
        methods: tuple[str, ...],
        static: StaticHeaders | None,
        bearer: Rotating[BearerJwt] | None,
        signature: Rotating[BodySignature] | None,
    ) -> None:
        self.methods = methods
        self.static = static
        self.rotating_bearer = bearer
        self.rotating_signature = signature
        self.mode = "+".join(methods)

    @property
    def bearer(self) -> BearerJwt | None:
        return None if self.rotating_bearer is None else self.rotating_bearer.checker

    @property
    def signature(self) -> BodySignature | None:
        return None if self.rotating_signature is None else self.rotating_signature.checker

    def verify(self, request: InboundRequest, now: float) -> VerifiedRequest:
        key_id: str | None = None
        if self.static is not None:
            self.static.check(request)
        if self.rotating_bearer is not None:
            key_id = self.rotating_bearer.check(request, now)
        if self.rotating_signature is not None:
            key_id = self.rotating_signature.check(request, now)
        return VerifiedRequest(request, SCHEME, key_id=key_id, mode=self.mode)


@dataclass(frozen=True)
class Parsed:
    opts: Options
    methods: tuple[str, ...]
    jwt: Options | None
    signature: Options | None


def parse(ctx: BuildContext) -> Parsed:
    opts = Options(ctx.options, f"{ctx.where}.verify", OPTIONS, ctx.base_dir)
    present = tuple(m for m in METHODS if opts.has(m.replace("-", "_")))
    methods = opts.texts("methods", present, METHODS)
    if not methods:
        raise opts.fail("methods", "no method configured; valid: " + ", ".join(METHODS))
    for method in methods:
        if not opts.has(method.replace("-", "_")):
            raise opts.fail(method.replace("-", "_"), f"required by method {method!r}")
    jwt_opts = opts.table("jwt", JWT_OPTIONS) if "jwt" in methods else None
    sig_opts = opts.table("signature", SIGNATURE_OPTIONS) if "signature" in methods else None
    return Parsed(opts, tuple(m for m in METHODS if m in methods), jwt_opts, sig_opts)


def _signature(opts: Options) -> BodySignature:
    pinned: dict[str, PinnedKey] = {}
    for item in opts.tables("keys", ("id", "pem_file", "expires")):
        key_id = item.opt_text("id")
        if not key_id:
            raise item.fail("id", "required: the key identifier the Key-ID header carries")
        key = keys.public_key(item, "pem_file")
        if key is None:
            raise item.fail("pem_file", "required: a PEM public key or certificate")
        pinned[key_id] = PinnedKey(key_id, key, item.instant("expires"))
    for jwk in keys.jwks(opts, "jwks_file", "jwks_url"):
        if jwk.key_id and jwk.key_id not in pinned:
            pinned[jwk.key_id] = PinnedKey(jwk.key_id, jwk.key)
    if not pinned:
        raise opts.fail("keys", "no key configured (keys, jwks_file or jwks_url)")
    keys.private_key(opts, "signing_key_file")  # fail at start-up, not on first send
    return BodySignature(
        header=opts.text("header", "Signature") or "Signature",
        key_id_header=opts.text("key_id_header", "Key-ID"),
        encoding=opts.choice("encoding", "base64", ("base64", "base64url", "hex")),
        pinned=pinned,
    )


def build(ctx: BuildContext) -> JPMorganVerifier:
    parsed = parse(ctx)
    static = None
    if "static-headers" in parsed.methods:
        static = StaticHeaders(parsed.opts.env_map("static_headers", ctx.env))
    bearer = signature = None
    # The rebuilds reuse the JwksSource of their options table (keys.jwks_source is
    # remembered per table): the JWKS is fetched once here, then only on refresh.
    if parsed.jwt is not None:
        rebuild_jwt = functools.partial(build_jwt, parsed.jwt)
        first_jwt = rebuild_jwt()
        source = keys.jwks_source(parsed.jwt, "jwks_file", "jwks_url")
        bearer = Rotating(first_jwt, source, rebuild_jwt)
    if parsed.signature is not None:
        rebuild_sig = functools.partial(_signature, parsed.signature)
        first_sig = rebuild_sig()
        source = keys.jwks_source(parsed.signature, "jwks_file", "jwks_url")
        signature = Rotating(first_sig, source, rebuild_sig)
    return JPMorganVerifier(parsed.methods, static, bearer, signature)


class JPMorganSigner:
    """Static headers from the environment, a minted JWT and a body signature, as configured."""

    def __init__(self, ctx: BuildContext) -> None:
        verifier, parsed = build(ctx), parse(ctx)
        static = verifier.static.display if verifier.static else {}
        self.static = {name: values[0].decode("latin-1") for name, values in static.items()}
        self.mint = None
        if verifier.bearer is not None and parsed.jwt is not None:
            self.mint = verifier.bearer.signer(parsed.jwt)
        self.signature = verifier.signature
        self.private: keys.PrivateKey | None = None
        self.key_id = ""
        if self.signature is not None and parsed.signature is not None:
            self.private = keys.private_key(parsed.signature, "signing_key_file")
            if self.private is None:
                raise parsed.signature.fail("signing_key_file", "required to sign payloads")
            default_kid = next(iter(self.signature.pinned))
            self.key_id = parsed.signature.text("signing_key_id", default_kid)

    def sign(
        self,
        body: bytes,
        now: float,
        *,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> dict[str, str]:
        headers = dict(self.static)
        if self.mint is not None:
            headers["Authorization"] = "Bearer " + self.mint(now)
        if self.signature is not None and self.private is not None:
            raw = keys.sign(self.private, body)
            encoding = self.signature.encoding
            if encoding == "hex":
                headers[self.signature.header] = raw.hex()
            else:
                encode = base64.urlsafe_b64encode if encoding == "base64url" else base64.b64encode
                headers[self.signature.header] = encode(raw).decode("ascii")
            if self.signature.key_id_header:
                headers[self.signature.key_id_header] = self.key_id
        return headers
