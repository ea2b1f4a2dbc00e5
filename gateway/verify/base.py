"""The verifier contract: only a verifier turns an inbound request into a VerifiedRequest.

Every scheme implements `Verifier.verify(request, now)`. It looks only at the raw
body bytes and the (attacker-controlled) headers, compares in constant time,
tries every live secret, and either returns a `VerifiedRequest` or raises
`VerificationError(reason)` with a reason from `REASONS` (a bounded metric label).
A verifier never logs and never puts a secret or a signature into an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from schemas.errors import VerificationError

__all__ = [
    "REASONS",
    "BuildContext",
    "InboundRequest",
    "Secret",
    "VerificationError",
    "VerifiedRequest",
    "Verifier",
    "VerifierFactory",
]

# The only values `VerificationError.reason` may take (a Prometheus label).
REASONS = frozenset(
    {
        "missing_header",  # a required header is absent
        "malformed_header",  # present but not parseable
        "bad_signature",  # no live secret/key produced a matching signature
        "stale_timestamp",  # signed timestamp older than the tolerance
        "future_timestamp",  # signed timestamp further ahead than the tolerance
        "unknown_key",  # key id names no configured key
        "expired_key",  # the key matched by id is past its expiry
        "bad_token",  # static token or bearer JWT rejected
        "body_unreadable",  # the scheme needs to parse the body and cannot
        "other",  # a plugin scheme's own reason (logged as detail), outside this set
        "verifier_error",  # the verifier raised something else: a bug; fails closed
    }
)


@dataclass(frozen=True, slots=True)
class Secret:
    """One live secret. `key_id` is safe to show (an env-var name or a label), `value` is not."""

    key_id: str
    value: bytes

    def __repr__(self) -> str:  # never print the value
        return f"Secret(key_id={self.key_id!r}, value=<redacted>)"


# Not frozen, and each with its own __init__ (compiled with the module; the one the
# dataclasses module would generate is Python code: see schemas/envelope.py): values all
# the same, that nothing changes once built.
@dataclass(slots=True, init=False)
class InboundRequest:
    """What a verifier sees: header names lower-cased, the body exactly as received."""

    headers: Mapping[str, str]
    body: bytes

    def __init__(self, headers: Mapping[str, str], body: bytes) -> None:
        self.headers = headers
        self.body = body


@dataclass(slots=True, init=False)
class VerifiedRequest:
    """Proof that `request` passed `scheme`. Built only by verifiers."""

    request: InboundRequest
    scheme: str
    key_id: str | None  # which secret/key matched (for safe rotation)
    mode: str | None  # which variant matched (Just Wallet mode, J.P. Morgan methods)
    signed_timestamp: float | None  # unix seconds, when the scheme signs one
    event_id: str | None  # id the scheme carries in headers (webhook-id, X-GitHub-Delivery)
    event_type: str | None  # type the scheme carries in headers (X-GitHub-Event, ...)

    def __init__(
        self,
        request: InboundRequest,
        scheme: str,
        key_id: str | None = None,
        mode: str | None = None,
        signed_timestamp: float | None = None,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> None:
        self.request = request
        self.scheme = scheme
        self.key_id = key_id
        self.mode = mode
        self.signed_timestamp = signed_timestamp
        self.event_id = event_id
        self.event_type = event_type


class Verifier(Protocol):
    scheme: str

    def verify(self, request: InboundRequest, now: float) -> VerifiedRequest:
        """Return proof of authenticity or raise VerificationError(reason)."""
        ...


@dataclass(frozen=True)
class BuildContext:
    """What a scheme factory gets from the config loader.

    `where` is the config path of the source (e.g. ``sources.fintoc``) so that a
    factory can raise ``ConfigError(f"{where}.verify.<option>", ...)``.
    `env` resolves further secret material that options name by env-var name;
    `base_dir` is the config file's folder, against which relative file paths resolve.
    """

    where: str
    secrets: Sequence[Secret]
    options: Mapping[str, Any]
    env: Mapping[str, str] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path)  # relative key-file paths resolve here


VerifierFactory = Callable[[BuildContext], Verifier]
