"""Just Wallet: the modes its webhook documentation shows, and nothing more.

The documentation contradicts itself (docs/providers.md). Modes, tried in this order;
``VerifiedRequest.mode`` (the ``mode`` label of ``webhook_bridge_gateway_verified_total``)
names the one that matched:

- ``token``: the prose. ``Signature`` equals the configured secret (constant-time).
- ``hmac-reserialized-node``: the Node sample. ``Signature`` = lower-case hex
  HMAC-SHA256(secret, ``JSON.stringify(JSON.parse(body))``).
- ``hmac-reserialized-php``: the PHP/Laravel sample. ``Signature`` = lower-case hex
  HMAC-SHA256(secret, ``json_encode($request->all())``).
- ``hmac-reserialized-ruby``: the Ruby sample. ``Webhook-Secret`` = lower-case hex
  HMAC-SHA256(secret, ``JSON.generate(JSON.parse(body))``).

How each runtime re-serialises is in `gateway.verify.reserialize`, checked against
vectors the real runtimes computed. No sample signs the raw bytes, none accepts upper-case
hex, and none reads a plain secret from ``Webhook-Secret``; neither does this scheme.

Option of ``[sources.X.verify]``: ``modes``, any of the four (default: all).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.verify import reserialize
from gateway.verify.base import BuildContext, InboundRequest, VerifiedRequest
from gateway.verify.common import MAX_HEADER_CHARS, require_secrets
from gateway.verify.hmac_scheme import KeyRing
from schemas.errors import BridgeError, VerificationError
from schemas.options import Options

SCHEME = "justwallet"
OPTIONS = ("modes",)
SIGNATURE = "Signature"
WEBHOOK_SECRET = "Webhook-Secret"  # noqa: S105 (a header name)


@dataclass(frozen=True, slots=True)
class Mode:
    name: str  # the metric label
    header: str  # the header the sample reads
    writer: Callable[[Any], bytes] | None  # how the sample re-serialises; None: the token


MODES: tuple[Mode, ...] = (
    Mode("token", SIGNATURE, None),
    Mode("hmac-reserialized-node", SIGNATURE, reserialize.node_stringify),
    Mode("hmac-reserialized-php", SIGNATURE, reserialize.php_json_encode),
    Mode("hmac-reserialized-ruby", WEBHOOK_SECRET, reserialize.ruby_generate),
)
MODE_NAMES = tuple(mode.name for mode in MODES)
_LOWER_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class JustWalletVerifier:
    scheme = SCHEME

    def __init__(self, modes: Sequence[Mode], ctx: BuildContext) -> None:
        self._modes = tuple(modes)
        self._headers = tuple(dict.fromkeys(mode.header.lower() for mode in modes))
        self._tokens = [(s.key_id, s.value) for s in ctx.secrets]
        self._ring = KeyRing([(s.key_id, s.value) for s in ctx.secrets], "sha256")

    @property
    def mode_names(self) -> tuple[str, ...]:
        """The `mode` values this verifier can report (the configured modes)."""
        return tuple(mode.name for mode in self._modes)

    def verify(self, request: InboundRequest, now: float) -> VerifiedRequest:
        if not any(name in request.headers for name in self._headers):
            raise VerificationError("missing_header", " or ".join(self._headers))
        document: Any = None
        parsed = False
        for mode in self._modes:
            value = request.headers.get(mode.header.lower())
            if value is None or len(value) > MAX_HEADER_CHARS:
                continue
            if mode.writer is None:
                key_id = self._token(value)
            else:
                if not _LOWER_HEX_SHA256.fullmatch(value):
                    continue
                if not parsed:
                    document, parsed = _parse(request.body), True
                if document is None:
                    continue
                key_id = self._hmac(mode.writer, document, bytes.fromhex(value))
            if key_id is not None:
                return VerifiedRequest(request, SCHEME, key_id=key_id, mode=mode.name)
        raise VerificationError("bad_signature", "no documented mode matched")

    def _token(self, value: str) -> str | None:
        try:
            presented = value.encode("latin-1")  # back to the wire bytes
        except UnicodeEncodeError:
            return None
        for key_id, token in self._tokens:
            if hmac.compare_digest(presented, token):
                return key_id
        return None

    def _hmac(self, writer: Callable[[Any], bytes], document: Any, signature: bytes) -> str | None:
        try:
            message = writer(document)
        except ValueError:  # the sample's runtime fails on this body
            return None
        return self._ring.find(message, [signature])


def _parse(body: bytes) -> Any:
    try:
        return reserialize.parse(body)
    except (ValueError, RecursionError):
        return None


def _modes(ctx: BuildContext) -> tuple[Mode, ...]:
    opts = Options(ctx.options, f"{ctx.where}.verify", OPTIONS, ctx.base_dir)
    chosen = opts.texts("modes", MODE_NAMES, MODE_NAMES)
    return tuple(mode for mode in MODES if mode.name in chosen)


def build(ctx: BuildContext) -> JustWalletVerifier:
    modes = _modes(ctx)
    require_secrets(ctx)
    return JustWalletVerifier(modes, ctx)


class JustWalletSigner:
    """What a sender satisfying the configured modes' samples attaches: ``Signature`` from
    the first configured of Node, PHP, token (a header holds one value), and
    ``Webhook-Secret`` for the Ruby sample. `samples.sample_body` makes bodies that Node,
    PHP and Ruby re-serialise to the same bytes, so every sample accepts them."""

    def __init__(self, ctx: BuildContext) -> None:
        modes = _modes(ctx)
        self._secret = require_secrets(ctx)[0].value
        preference = ("hmac-reserialized-node", "hmac-reserialized-php", "token")
        by_name = {mode.name: mode for mode in modes}
        self._signature = next((by_name[n] for n in preference if n in by_name), None)
        self._ruby = by_name.get("hmac-reserialized-ruby")

    def sign(
        self,
        body: bytes,
        now: float,
        *,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        for mode in (self._signature, self._ruby):
            if mode is None:
                continue
            if mode.writer is None:
                headers[mode.header] = self._secret.decode("latin-1")
                continue
            try:
                message = mode.writer(reserialize.parse(body))
            except (ValueError, RecursionError):
                raise BridgeError(
                    f"justwallet: {mode.name} signs a JSON object or array; this body is not one"
                ) from None
            headers[mode.header] = hmac.new(self._secret, message, "sha256").hexdigest()
        return headers
