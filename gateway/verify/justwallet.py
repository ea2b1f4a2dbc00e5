"""Just Wallet: one source, the three contradictory schemes of its documentation.

Modes, tried in this order; ``VerifiedRequest.mode`` records the one that matched:

- ``token``: a token header equals a live secret (constant-time).
- ``hmac-raw``: ``Signature`` = lower hex HMAC-SHA256(secret, raw body).
- ``hmac-reserialized``: ``Signature`` = hex HMAC-SHA256 over the body parsed and
  re-serialised as the documentation's samples do: Node ``JSON.stringify``
  (mode ``hmac-reserialized-node``) or PHP ``json_encode`` with default flags
  (``/`` -> ``\\/``, non-ASCII -> ``\\uXXXX``; mode ``hmac-reserialized-php``).
  A body that is not JSON simply does not match in this mode.

Options of ``[sources.X.verify]``:

- ``modes``: any of ``token``, ``hmac-raw``, ``hmac-reserialized`` (default: all three).
- ``header``: the HMAC signature header (default ``Signature``).
- ``token_headers``: headers that may carry the static token (default
  ``["Signature", "Webhook-Secret"]``, the latter from the Ruby sample).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any

from gateway.errors import BridgeError, VerificationError
from gateway.verify.base import BuildContext, InboundRequest, VerifiedRequest
from gateway.verify.common import MAX_HEADER_CHARS, Options, decode_hex, require_secrets
from gateway.verify.hmac_scheme import KeyRing

SCHEME = "justwallet"
OPTIONS = ("modes", "header", "token_headers")
MODES = ("token", "hmac-raw", "hmac-reserialized")
_SAFE_INT = 2**53


def node_json(obj: Any) -> bytes:
    """``JSON.stringify(JSON.parse(body))``: compact, non-ASCII kept, integral floats as ints."""
    return json.dumps(_as_node(obj), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def php_json(obj: Any) -> bytes:
    """``json_encode(json_decode(body))``: compact, ``\\/`` and ``\\uXXXX`` escapes."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
    return text.replace("/", "\\/").encode("ascii")  # '/' occurs only inside strings


def _as_node(obj: Any) -> Any:
    if isinstance(obj, dict):
        # JS objects list integer-like keys first, ascending, then the rest in order.
        index_keys = sorted((k for k in obj if _is_index(k)), key=int)
        rest = [k for k in obj if not _is_index(k)]
        return {k: _as_node(obj[k]) for k in (*index_keys, *rest)}
    if isinstance(obj, list):
        return [_as_node(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer() and abs(obj) < 1e21:
        return int(obj)
    if isinstance(obj, int) and not isinstance(obj, bool) and abs(obj) >= _SAFE_INT:
        return float(obj)  # JS numbers are doubles
    return obj


def _is_index(key: str) -> bool:
    return key.isascii() and key.isdigit() and (key == "0" or key[0] != "0") and len(key) < 11


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN / Infinity are not JSON


SERIALISERS: Sequence[tuple[str, Callable[[Any], bytes]]] = (
    ("hmac-reserialized-node", node_json),
    ("hmac-reserialized-php", php_json),
)


class JustWalletVerifier:
    scheme = SCHEME

    def __init__(
        self, modes: Sequence[str], header: str, token_headers: Sequence[str], ctx: BuildContext
    ) -> None:
        self._modes = modes
        self._header = header.lower()
        self._token_headers = tuple(h.lower() for h in token_headers)
        self._tokens = [(s.key_id, s.value) for s in ctx.secrets]
        self._ring = KeyRing([(s.key_id, s.value) for s in ctx.secrets], "sha256")

    def verify(self, request: InboundRequest, now: float) -> VerifiedRequest:
        relevant = (
            {self._header, *self._token_headers} if "token" in self._modes else {self._header}
        )
        if not any(name in request.headers for name in relevant):
            raise VerificationError("missing_header", self._header)
        checks = {
            "token": self._token,
            "hmac-raw": self._hmac_raw,
            "hmac-reserialized": self._hmac_reserialized,
        }
        for mode in self._modes:
            match = checks[mode](request)
            if match is not None:
                key_id, matched_mode = match
                return VerifiedRequest(request, SCHEME, key_id=key_id, mode=matched_mode)
        raise VerificationError("bad_signature", f"{self._header}: no mode matched")

    def _token(self, request: InboundRequest) -> tuple[str, str] | None:
        for name in self._token_headers:
            value = request.headers.get(name)
            if value is None or len(value) > MAX_HEADER_CHARS:
                continue
            try:
                presented = value.strip().encode("latin-1")  # back to the wire bytes
            except UnicodeEncodeError:
                continue
            for key_id, token in self._tokens:
                if hmac.compare_digest(presented, token):
                    return key_id, "token"
        return None

    def _signature(self, request: InboundRequest) -> bytes | None:
        value = request.headers.get(self._header)
        if value is None or len(value) > MAX_HEADER_CHARS:
            return None
        return decode_hex(value.strip())

    def _hmac_raw(self, request: InboundRequest) -> tuple[str, str] | None:
        signature = self._signature(request)
        key_id = self._ring.find(request.body, [signature]) if signature else None
        return None if key_id is None else (key_id, "hmac-raw")

    def _hmac_reserialized(self, request: InboundRequest) -> tuple[str, str] | None:
        signature = self._signature(request)
        if not signature:
            return None
        try:
            obj = json.loads(request.body, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return None
        for mode, serialise in SERIALISERS:
            try:
                message = serialise(obj)
            except (ValueError, RecursionError, UnicodeError):
                continue
            key_id = self._ring.find(message, [signature])
            if key_id is not None:
                return key_id, mode
        return None


def _options(ctx: BuildContext) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    opts = Options(ctx.options, f"{ctx.where}.verify", OPTIONS, ctx.base_dir)
    modes = opts.texts("modes", MODES, MODES)
    header = opts.text("header", "Signature") or "Signature"
    token_headers = opts.texts("token_headers", ("Signature", "Webhook-Secret"))
    return modes, header, token_headers


def build(ctx: BuildContext) -> JustWalletVerifier:
    modes, header, token_headers = _options(ctx)
    require_secrets(ctx)
    return JustWalletVerifier(modes, header, token_headers, ctx)


class JustWalletSigner:
    """Signs with the first configured mode that can sign: hex HMAC over the raw body, over
    the body re-serialised the Node way, or the bare token."""

    def __init__(self, ctx: BuildContext) -> None:
        modes, self._header, token_headers = _options(ctx)
        self._secret = require_secrets(ctx)[0].value
        self._mode = "hmac-raw" if "hmac-raw" in modes else modes[0]
        self._token_header = token_headers[0]

    def sign(
        self,
        body: bytes,
        now: float,
        *,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> dict[str, str]:
        if self._mode == "token":
            return {self._token_header: self._secret.decode("latin-1")}
        if self._mode == "hmac-reserialized":
            try:
                body = node_json(json.loads(body))
            except (ValueError, RecursionError):
                raise BridgeError(
                    "justwallet: hmac-reserialized signing needs a JSON body"
                ) from None
        return {self._header: hmac.new(self._secret, body, "sha256").hexdigest()}
