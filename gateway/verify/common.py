"""Helpers shared by the scheme modules: option parsing, the signer contract, timestamps.

`Options` reads one TOML table and rejects unknown keys and bad values with a
one-line `ConfigError` naming the key and the valid choices. Nothing here ever
puts a secret, a signature or a header value into an error.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.verify.base import BuildContext, Secret
from schemas.errors import ConfigError, VerificationError

__all__ = [
    "MAX_HEADER_CHARS",
    "Signer",
    "SignerFactory",
    "check_window",
    "decode_b64",
    "decode_hex",
    "header_bytes",
    "parse_unix_seconds",
    "require_secrets",
]

MAX_HEADER_CHARS = 16_384  # longer signature headers are refused unparsed (cheap DoS guard)


class Signer(Protocol):
    """The sending side of a scheme: the headers a provider would attach to `body`."""

    def sign(
        self,
        body: bytes,
        now: float,
        *,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> dict[str, str]: ...


SignerFactory = Callable[[BuildContext], Signer]


def require_secrets(ctx: BuildContext) -> Sequence[Secret]:
    if not ctx.secrets:
        raise ConfigError(f"{ctx.where}.secrets", "this scheme needs at least one secret")
    return ctx.secrets


def parse_unix_seconds(text: str, header: str) -> int:
    if not (0 < len(text) <= 12 and text.isascii() and text.isdigit()):
        raise VerificationError("malformed_header", f"{header}: timestamp is not unix seconds")
    return int(text)


def check_window(timestamp: float, now: float, tolerance_s: float, header: str) -> None:
    if now - timestamp > tolerance_s:
        raise VerificationError("stale_timestamp", f"{header} is outside the tolerance")
    if timestamp - now > tolerance_s:
        raise VerificationError("future_timestamp", f"{header} is ahead of the tolerance")


def header_bytes(value: str, header: str) -> bytes:
    """Header text back to its wire bytes (ASGI servers decode headers as latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise VerificationError("malformed_header", f"{header}: not latin-1") from None


def decode_b64(text: str, *, urlsafe: bool = False) -> bytes | None:
    """Strict (padded) base64, or None for garbage."""
    try:
        if urlsafe:
            padded = text + "=" * (-len(text) % 4)
            return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        # what base64.b64decode(..., validate=True) calls, without its Python wrapper
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def decode_hex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text) if text.isascii() else None
    except ValueError:
        return None
