"""Routing attributes of a record, from its ``ce_*`` headers; the Avro value only as fallback.

Decoding an envelope costs tens of microseconds; reading the headers a few. The
gateway always writes the headers, so the decoder runs only for records from
other writers, and a record with neither usable headers nor a decodable value is
quarantined by the caller. With complete headers the value is still checked for
its framing (magic bytes and a known schema fingerprint or id: well under a
microsecond), so garbage under good headers is quarantined, not passed on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.envelope import Envelope
from schemas.errors import BridgeError
from schemas.records import source_of
from schemas.serde import SerdeError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Headers = list[tuple[str, bytes | None]]


class UnroutableRecord(BridgeError):
    """The record has neither the header nor a decodable value; `reason` is a metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Attributes:
    event_id: bytes
    source: str
    subject: bytes
    occurred_us: int


def parse_ce_time(text: bytes) -> int:
    """ISO 8601 UTC (``2024-05-01T12:00:00.123456Z``) to microseconds since the epoch."""
    stamp = datetime.fromisoformat(text.decode("ascii"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    delta = stamp - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class AttributeReader:
    """`read(key, value, headers)`: headers first, `decode(value)` for what is missing."""

    def __init__(
        self,
        decode: Callable[[bytes | None], Envelope],
        need_time: bool = True,
        framed: Callable[[bytes | None], bool] | None = None,
    ) -> None:
        self._decode = decode
        self._need_time = need_time  # the compactor does not order, so skips parsing ce_time
        self._framed = framed  # cheap framing check for the header-only path

    def read(self, key: bytes | None, value: bytes | None, headers: Headers | None) -> Attributes:
        found = dict(headers) if headers else {}  # later headers override earlier ones
        event_id = key or found.get("ce_id")
        source = found.get("ce_source")
        subject = found.get("ce_subject")
        time_text = found.get("ce_time")
        occurred_us: int | None = None if self._need_time else 0
        if time_text and self._need_time:
            try:
                occurred_us = parse_ce_time(time_text)
            except (ValueError, UnicodeDecodeError):
                occurred_us = None
        if event_id and source is not None and subject is not None and occurred_us is not None:
            if self._framed is not None and not self._framed(value):
                raise UnroutableRecord("undecodable")
            return Attributes(event_id, source_of(source), subject, occurred_us)
        try:
            env = self._decode(value)
        except SerdeError:
            if not event_id:
                raise UnroutableRecord("no_event_id") from None
            raise UnroutableRecord("undecodable") from None
        return Attributes(
            event_id or env.event_id.encode(),
            source_of(source) if source is not None else env.source,
            subject if subject is not None else env.ordering_key.encode(),
            occurred_us if occurred_us is not None else env.occurred_at,
        )
