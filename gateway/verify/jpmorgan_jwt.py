"""The bearer-JWT method of the ``jpmorgan`` scheme (options: see `gateway.verify.jpmorgan`).

Signature, ``iss``, ``aud`` and a required ``exp`` are checked; ``exp`` / ``nbf``
against the request time given to `verify` (not the wall clock), with ``leeway_s``.
Only asymmetric algorithms are allowed, and only those that fit the key's type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.verify import keys
from gateway.verify.base import InboundRequest
from gateway.verify.common import MAX_HEADER_CHARS
from schemas.errors import VerificationError
from schemas.options import Options

ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
_EC_ALGORITHM = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def fitting_algorithms(key: Any, allowed: Sequence[str]) -> tuple[str, ...]:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        fit: tuple[str, ...] = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    elif isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        fit = (_EC_ALGORITHM.get(key.curve.name, ""),)
    elif isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        fit = ("EdDSA",)
    else:
        fit = ()
    return tuple(a for a in allowed if a in fit)


@dataclass(frozen=True, slots=True)
class JwtKey:
    kid: str | None
    key: keys.PublicKey
    algorithms: tuple[str, ...]


class BearerJwt:
    def __init__(
        self, jwt_keys: Sequence[JwtKey], issuer: str, audience: Sequence[str], leeway_s: float
    ) -> None:
        self.by_kid = {k.kid: k for k in jwt_keys if k.kid}
        self.anonymous = [k for k in jwt_keys if not k.kid]
        self.all = list(jwt_keys)
        self.issuer = issuer
        self.audience = list(audience)
        self.leeway_s = leeway_s

    def check(self, request: InboundRequest, now: float) -> str | None:
        value = request.headers.get("authorization")
        if value is None:
            raise VerificationError("missing_header", "authorization")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token or len(value) > MAX_HEADER_CHARS:
            raise VerificationError("malformed_header", "authorization: not a bearer token")
        try:
            kid = jwt.get_unverified_header(token.strip()).get("kid")
        except (jwt.PyJWTError, ValueError, TypeError):
            raise VerificationError("bad_token", "authorization: not a JWT") from None
        if isinstance(kid, str) and kid in self.by_kid:
            candidates = [self.by_kid[kid]]
        elif kid is not None and not self.anonymous:
            raise VerificationError("unknown_key", "authorization: unknown kid")
        else:
            candidates = self.anonymous or self.all
        for candidate in candidates:
            claims = self._decode(token.strip(), candidate)
            if claims is not None:
                self._check_times(claims, now)
                return candidate.kid
        raise VerificationError("bad_token", "authorization: rejected")

    def _decode(self, token: str, candidate: JwtKey) -> dict[str, Any] | None:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                candidate.key,
                algorithms=list(candidate.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_exp": False,  # checked against `now` below
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError, jwt.MissingRequiredClaimError):
            raise VerificationError("bad_token", "authorization: claims rejected") from None
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            return None
        return claims

    def _check_times(self, claims: dict[str, Any], now: float) -> None:
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        for value in (exp, nbf):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise VerificationError("bad_token", "authorization: bad exp/nbf claim")
        assert isinstance(exp, int | float) and isinstance(nbf, int | float)
        if now > exp + self.leeway_s:
            raise VerificationError("bad_token", "authorization: token expired")
        if now + self.leeway_s < nbf:
            raise VerificationError("bad_token", "authorization: token not yet valid")

    def signer(self, opts: Options) -> Callable[[float], str]:
        """Mint tokens the way an identity provider would (tests, `send`, benchmarks)."""
        private = keys.private_key(opts, "signing_key_file")
        if private is None:
            raise opts.fail("signing_key_file", "required to sign bearer JWTs")
        algorithms = fitting_algorithms(private, opts.texts("algorithms", ("RS256", "ES256")))
        if not algorithms:
            raise opts.fail("signing_key_file", "fits none of the configured algorithms")
        kid = opts.opt_text("signing_key_id")
        issuer, audience = self.issuer, self.audience[0]

        def mint(now: float) -> str:
            claims = {"iss": issuer, "aud": audience, "iat": int(now), "exp": int(now) + 300}
            headers = {"kid": kid} if kid else None
            return jwt.encode(claims, private, algorithm=algorithms[0], headers=headers)

        return mint


def build_jwt(opts: Options) -> BearerJwt:
    allowed = opts.texts("algorithms", ("RS256", "ES256"), ALGORITHMS)
    found: list[JwtKey] = []
    pem = keys.public_key(opts, "pem_file")
    if pem is not None:
        found.append(JwtKey(None, pem, fitting_algorithms(pem, allowed)))
    for jwk in keys.jwks(opts, "jwks_file", "jwks_url"):
        found.append(JwtKey(jwk.key_id, jwk.key, fitting_algorithms(jwk.key, allowed)))
    found = [k for k in found if k.algorithms]
    if not found:
        raise opts.fail("jwks_file", "no key fits the allowed algorithms (jwks_file/url, pem_file)")
    issuer = opts.opt_text("issuer")
    if not issuer:
        raise opts.fail("issuer", "required: the expected iss claim")
    if not opts.has("audience"):
        raise opts.fail("audience", "required: the expected aud claim")
    audience = opts.texts("audience", ())
    keys.private_key(opts, "signing_key_file")
    return BearerJwt(found, issuer, audience, opts.number("leeway_s", 60.0, positive=False))
