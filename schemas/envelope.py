"""The envelope as a Python value (its Kafka headers: `schemas.records`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ID_ORIGINS = ("PAYLOAD", "HEADER", "BODY_HASH")
TIME_ORIGINS = ("PAYLOAD", "HEADER", "RECEIVED")
CE_SPECVERSION = "1.0"

# What the gateway keeps in an envelope: these request headers (never Authorization,
# cookies or signatures), and text fields cut at these lengths (in characters). The
# record-size bound (`schemas.sizes`) rests on them.
HEADER_ALLOW_LIST = frozenset(
    {
        "content-type",
        "user-agent",
        "x-request-id",
        "webhook-id",
        "webhook-timestamp",
        "svix-id",
        "svix-timestamp",
        "x-github-event",
        "x-github-delivery",
        "x-github-hook-id",
        "x-shopify-topic",
        "x-shopify-webhook-id",
        "x-shopify-event-id",
        "x-shopify-shop-domain",
        "x-shopify-api-version",
        "x-slack-request-timestamp",
        "x-slack-retry-num",
        "x-slack-retry-reason",
        "key-id",
    }
)
MAX_HEADER_VALUE = 1024
MAX_ID_LENGTH = 256
MAX_TYPE_LENGTH = 256
MAX_KEY_LENGTH = 512


# The envelope's classes, and the verifier's request classes (gateway.verify.base), are
# values nothing changes after construction, but not frozen dataclasses, and each writes
# its own __init__ (init=False): a frozen dataclass's __init__ sets every field through
# object.__setattr__ (Envelope: ~9 us), and even a plain one is Python code that the
# dataclasses module generates, which mypyc cannot compile (~0.4 us for 7 fields); a
# written one is compiled with the module (~0.08 us) (docs/benchmarks.md). Keep each
# __init__'s parameters the fields, in order, with the defaults they had.
@dataclass(slots=True, init=False)
class Verification:
    scheme: str
    key_id: str | None
    mode: str | None

    def __init__(self, scheme: str, key_id: str | None = None, mode: str | None = None) -> None:
        self.scheme = scheme
        self.key_id = key_id
        self.mode = mode


@dataclass(slots=True, init=False)
class Envelope:
    """One verified webhook. Times are integer microseconds since the Unix epoch (UTC)."""

    event_id: str
    event_id_origin: str
    provider: str
    source: str
    event_type: str
    occurred_at: int
    occurred_at_origin: str
    received_at: int
    ordering_key: str
    content_type: str
    body: bytes
    headers: Mapping[str, str]
    verification: Verification
    request_id: str
    quarantine_reason: str | None
    extra: Mapping[str, object] = field(compare=False)

    def __init__(
        self,
        event_id: str,
        event_id_origin: str,
        provider: str,
        source: str,
        event_type: str,
        occurred_at: int,
        occurred_at_origin: str,
        received_at: int,
        ordering_key: str,
        content_type: str,
        body: bytes,
        headers: Mapping[str, str],
        verification: Verification,
        request_id: str,
        quarantine_reason: str | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        self.event_id = event_id
        self.event_id_origin = event_id_origin
        self.provider = provider
        self.source = source
        self.event_type = event_type
        self.occurred_at = occurred_at
        self.occurred_at_origin = occurred_at_origin
        self.received_at = received_at
        self.ordering_key = ordering_key
        self.content_type = content_type
        self.body = body
        self.headers = headers
        self.verification = verification
        self.request_id = request_id
        self.quarantine_reason = quarantine_reason
        self.extra = {} if extra is None else extra

    def to_record(self) -> dict[str, object]:
        return {
            "event_id": self.event_id,
            "event_id_origin": self.event_id_origin,
            "provider": self.provider,
            "source": self.source,
            "event_type": self.event_type,
            "occurred_at": self.occurred_at,
            "occurred_at_origin": self.occurred_at_origin,
            "received_at": self.received_at,
            "ordering_key": self.ordering_key,
            "content_type": self.content_type,
            "body": self.body,
            "headers": dict(self.headers),
            "verification": {
                "scheme": self.verification.scheme,
                "key_id": self.verification.key_id,
                "mode": self.verification.mode,
            },
            "request_id": self.request_id,
            "quarantine_reason": self.quarantine_reason,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Envelope:
        ver = rec["verification"]
        known = {
            "event_id",
            "event_id_origin",
            "provider",
            "source",
            "event_type",
            "occurred_at",
            "occurred_at_origin",
            "received_at",
            "ordering_key",
            "content_type",
            "body",
            "headers",
            "verification",
            "request_id",
            "quarantine_reason",
        }
        return cls(
            event_id=str(rec["event_id"]),
            event_id_origin=str(rec["event_id_origin"]),
            provider=str(rec["provider"]),
            source=str(rec["source"]),
            event_type=str(rec["event_type"]),
            occurred_at=to_micros(rec["occurred_at"]),
            occurred_at_origin=str(rec["occurred_at_origin"]),
            received_at=to_micros(rec["received_at"]),
            ordering_key=str(rec["ordering_key"]),
            content_type=str(rec["content_type"]),
            body=bytes(rec["body"]),
            headers=dict(rec["headers"]),
            verification=Verification(
                scheme=str(ver["scheme"]),
                key_id=ver.get("key_id"),
                mode=ver.get("mode"),
            ),
            request_id=str(rec["request_id"]),
            quarantine_reason=rec.get("quarantine_reason"),
            extra={k: v for k, v in rec.items() if k not in known},
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: object) -> int:
    """fastavro returns timestamp-micros as aware datetimes; the envelope keeps ints."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, int):
        return value
    raise TypeError(f"not a timestamp: {type(value).__name__}")


# Whole seconds already formatted: strftime costs ~1.5 us a record (gateway, fan-out), and
# occurred_at values cluster. A dict, emptied when full, not functools.lru_cache: compiled
# code calls an lru_cache through the generic call protocol, and this (with the fraction
# made by str() instead of a format spec) halves the function (0.87 -> 0.38 us).
_SECONDS: dict[int, str] = {}
_SECONDS_KEPT = 1024


def micros_to_iso(micros: int) -> str:
    seconds = micros // 1_000_000
    text = _SECONDS.get(seconds)
    if text is None:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
        _SECONDS[seconds] = text
    # 1_000_000 + rest has seven digits: the last six are the zero-padded fraction
    return text + str(1_000_000 + micros - seconds * 1_000_000)[1:] + "Z"
