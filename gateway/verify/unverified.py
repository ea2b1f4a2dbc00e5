"""Scheme ``none``: accepts every request. No options.

The config loader allows it only with ``allow_unverified = true`` on the source;
the signer attaches no headers.
"""

from __future__ import annotations

from gateway.verify.base import BuildContext, InboundRequest, VerifiedRequest
from schemas.options import Options

SCHEME = "none"


class UnverifiedVerifier:
    scheme = SCHEME

    def verify(self, request: InboundRequest, now: float) -> VerifiedRequest:
        return VerifiedRequest(request=request, scheme=SCHEME)

    def sign(
        self,
        body: bytes,
        now: float,
        *,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> dict[str, str]:
        return {}


def build(ctx: BuildContext) -> UnverifiedVerifier:
    Options(ctx.options, f"{ctx.where}.verify", (), ctx.base_dir)
    return UnverifiedVerifier()
