"""Webhook verification schemes, by name, and their signing counterparts.

`build_verifier(scheme, ctx)` turns a source's ``scheme`` and ``[sources.X.verify]``
table into a `Verifier`; `sign_request(...)` gives the headers a sender of that
scheme would attach (for ``webhook-bridge send``, benchmarks and end-to-end tests).
A scheme is a built-in name from `SCHEMES` or a plugin ``"package.module:Factory"``
called with the `BuildContext`; a plugin verifier that also has a ``sign`` method
(see `gateway.verify.common.Signer`) can sign too.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from gateway.verify import hmac_scheme, jpmorgan, justwallet, standard_webhooks, unverified
from gateway.verify.base import BuildContext, Verifier, VerifierFactory
from gateway.verify.common import Signer, SignerFactory
from schemas.errors import ConfigError

__all__ = [
    "SCHEMES",
    "SIGNERS",
    "Signer",
    "SignerFactory",
    "build_signer",
    "build_verifier",
    "sign_request",
]

_HMAC_PRESETS = ("jiko", "fintoc", "stripe", "github", "shopify", "slack", "hmac")

SCHEMES: Mapping[str, VerifierFactory] = {
    "jiko": hmac_scheme.preset("jiko"),
    "justwallet": justwallet.build,
    "jpmorgan": jpmorgan.build,
    "fintoc": hmac_scheme.preset("fintoc"),
    "standard-webhooks": standard_webhooks.build,
    "stripe": hmac_scheme.preset("stripe"),
    "github": hmac_scheme.preset("github"),
    "shopify": hmac_scheme.preset("shopify"),
    "slack": hmac_scheme.preset("slack"),
    "hmac": hmac_scheme.preset("hmac"),
    "none": unverified.build,
}

SIGNERS: Mapping[str, SignerFactory] = {
    **{name: hmac_scheme.preset_signer(name) for name in _HMAC_PRESETS},
    "justwallet": justwallet.JustWalletSigner,
    "jpmorgan": jpmorgan.JPMorganSigner,
    "standard-webhooks": standard_webhooks.build_signer,
    "none": unverified.build,
}


def _plugin(scheme: str, ctx: BuildContext) -> Any:
    module_name, _, attr = scheme.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"{ctx.where}.scheme", f"cannot load plugin {scheme!r} ({type(exc).__name__})"
        ) from None
    instance = factory(ctx)
    if not callable(getattr(instance, "verify", None)):
        raise ConfigError(f"{ctx.where}.scheme", f"plugin {scheme!r} made no verifier")
    return instance


def build_verifier(scheme: str, ctx: BuildContext) -> Verifier:
    """The verifier for a built-in scheme name or a ``"package.module:Factory"`` plugin."""
    factory = SCHEMES.get(scheme)
    if factory is not None:
        return factory(ctx)
    if ":" in scheme:
        verifier: Verifier = _plugin(scheme, ctx)
        return verifier
    raise ConfigError(
        f"{ctx.where}.scheme", f"unknown scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}"
    )


def build_signer(scheme: str, ctx: BuildContext) -> Signer:
    """A reusable signer (keys prepared once) for the sending side of `scheme`."""
    factory = SIGNERS.get(scheme)
    if factory is not None:
        return factory(ctx)
    if ":" in scheme:
        plugin = _plugin(scheme, ctx)
        if callable(getattr(plugin, "sign", None)):
            signer: Signer = plugin
            return signer
        raise ConfigError(f"{ctx.where}.scheme", f"plugin {scheme!r} cannot sign")
    raise ConfigError(
        f"{ctx.where}.scheme", f"unknown scheme {scheme!r}; choose one of: {', '.join(SIGNERS)}"
    )


def sign_request(
    scheme: str,
    ctx: BuildContext,
    body: bytes,
    now: float,
    *,
    event_id: str | None = None,
    event_type: str | None = None,
) -> dict[str, str]:
    """The headers a sender of `scheme` would attach, signed with the first secret."""
    signer = build_signer(scheme, ctx)
    return signer.sign(body, now, event_id=event_id, event_type=event_type)
