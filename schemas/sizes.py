"""How large a Kafka record carrying an envelope can get, so that every limit fits it.

A body of up to ``body_limit`` bytes becomes one record: key (event id), value (the
Avro envelope, framed) and headers (CloudEvents attributes, plus what the stages add).
The producers' ``message.max.bytes`` and the topics' ``max.message.bytes`` must hold
the largest such record in its own batch, or the broker refuses a webhook that the
gateway already accepted as small enough. The bound is each part at its worst case::

    largest_batch = body_limit + envelope_overhead + record_overhead + BATCH_HEADER

    envelope_overhead   (the Avro value, besides the body bytes)
      = FRAMING (10: single-object 0xC3 0x01 + 8-byte fingerprint; Confluent needs 5)
      + 5 per string/bytes length prefix (varint) and 10 per long, 1 per enum/union branch
      + event_id <= 256 chars, event_type <= 256, ordering_key <= 512: 4 UTF-8 bytes each
      + content_type and each allow-listed header value <= 1024 chars: 2 UTF-8 bytes each
        (header values are read as latin-1), plus every allow-listed header name
      + provider, source, scheme, key ids, quarantine reason: their longest configured text
      + verification mode <= 64 bytes, request id <= 128
    record_overhead     (Kafka record v2 around key, value and headers)
      = 36 (length, attributes, timestamp/offset deltas, key/value lengths, header count)
      + key (the event id, <= 1024 bytes)
      + CloudEvents headers (ids, type, subject, time, source) + 10 per header
      + STAGE_HEADERS (4096: quarantine, origin and DLQ headers the later stages add)
    BATCH_HEADER = 61   (Kafka record batch v2 header: the broker limits batches)

With the default ``body_limit`` of 1 MiB this comes to about 1.1 MB; `record_limits` gives
the producers' and topics' values from it (docs/pipeline.md "Record size").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from schemas.envelope import (
    HEADER_ALLOW_LIST,
    MAX_HEADER_VALUE,
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_TYPE_LENGTH,
)


# What these functions read of a configuration (`schemas.config.Settings` has it all;
# described here so that the config, which calls them, is not imported back).
class _Selector(Protocol):
    @property
    def text(self) -> str: ...


class _Selectors(Protocol):
    @property
    def type(self) -> _Selector | None: ...


class _Source(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    @property
    def body_limit(self) -> int: ...
    @property
    def key_ids(self) -> tuple[str, ...]: ...
    @property
    def selectors(self) -> _Selectors: ...


class _Gateway(Protocol):
    @property
    def body_limit(self) -> int: ...


class Settings(Protocol):
    @property
    def sources(self) -> Mapping[str, _Source]: ...
    @property
    def gateway(self) -> _Gateway: ...


FRAMING = 10
LENGTH_PREFIX = 5  # Avro varint length of a string or bytes (and of a map block)
LONG = 10
BRANCH = 1  # an enum symbol or a union branch
UTF8_PER_CHAR = 4
LATIN1_PER_CHAR = 2  # a latin-1 character is at most 2 bytes in UTF-8
MAX_MODE = 64
MAX_REQUEST_ID = 128
RECORD_FIELDS = (
    36  # varints: length 5, attributes 1, timestamp 10, offset 5, key/value 5+5, count 5
)
PER_HEADER = 10  # varint lengths of a header's name and value
CE_TIME = 27  # 2026-11-23T12:01:51.825000Z
STAGE_HEADERS = 4096
BATCH_HEADER = 61
LIBRDKAFKA_MAX = 1_000_000_000  # the largest message.max.bytes librdkafka accepts
LIBRDKAFKA_DEFAULT = 1_000_000  # librdkafka's default message.max.bytes and batch.size


def _text(chars: int, per_char: int = UTF8_PER_CHAR) -> int:
    return LENGTH_PREFIX + chars * per_char


def _longest(texts: Iterable[str]) -> int:
    return max((len(t.encode("utf-8")) for t in texts), default=0)


def envelope_overhead(settings: Settings) -> int:
    """The Avro value's bytes besides the body, at most (see the module docstring)."""
    sources = settings.sources.values()
    names = _longest([*(s.name for s in sources), *(s.provider for s in sources)])
    key_ids = _longest(k for s in sources for k in s.key_ids)
    schemes = _longest(s.scheme for s in sources)
    selectors = _longest(s.selectors.type.text for s in sources if s.selectors.type is not None)
    quarantine_reason = 64 + selectors  # "no event type at <selector>", or a fixed text
    headers = (
        LENGTH_PREFIX
        + BRANCH
        + sum(
            LENGTH_PREFIX + len(name) + _text(MAX_HEADER_VALUE, LATIN1_PER_CHAR)
            for name in HEADER_ALLOW_LIST
        )
    )
    return (
        FRAMING
        + _text(MAX_ID_LENGTH)  # event_id (a body hash is 71 bytes)
        + BRANCH  # event_id_origin
        + 2 * (LENGTH_PREFIX + names)  # provider, source
        + _text(MAX_TYPE_LENGTH)
        + 2 * LONG  # occurred_at, received_at
        + BRANCH  # occurred_at_origin
        + _text(MAX_KEY_LENGTH)  # ordering_key (its fallback, the event id, is shorter)
        + _text(MAX_HEADER_VALUE, LATIN1_PER_CHAR)  # content_type
        + LENGTH_PREFIX  # the body's length prefix
        + headers
        + LENGTH_PREFIX
        + schemes  # verification.scheme
        + 2 * BRANCH
        + LENGTH_PREFIX
        + key_ids
        + LENGTH_PREFIX
        + MAX_MODE
        + LENGTH_PREFIX
        + MAX_REQUEST_ID
        + BRANCH
        + LENGTH_PREFIX
        + quarantine_reason
    )


def record_overhead(settings: Settings) -> int:
    """Key, headers and record framing around the value, at most."""
    sources = settings.sources.values()
    source_names = _longest(s.name for s in sources)
    selectors = _longest(s.selectors.type.text for s in sources if s.selectors.type is not None)
    id_bytes = MAX_ID_LENGTH * UTF8_PER_CHAR
    ce_headers = {
        "ce_specversion": 3,
        "ce_id": id_bytes,
        "ce_source": len("/webhooks/") + source_names,
        "ce_type": MAX_TYPE_LENGTH * UTF8_PER_CHAR,
        "ce_time": CE_TIME,
        "ce_subject": MAX_KEY_LENGTH * UTF8_PER_CHAR,
        "content-type": len("application/avro"),
        "x-quarantine-reason": 64 + selectors,
        "x-quarantine-stage": len("reorderer"),
    }
    headers = sum(PER_HEADER + len(name) + size for name, size in ce_headers.items())
    return RECORD_FIELDS + id_bytes + headers + STAGE_HEADERS


@dataclass(frozen=True)
class RecordLimits:
    """What the largest envelope needs, and where its body limit comes from."""

    body_limit: int  # the largest of the sources
    source: str  # a source with that limit
    overhead: int  # envelope + record + batch header
    batch: int  # body_limit + overhead: the least message.max.bytes / max.message.bytes


def record_limits(settings: Settings) -> RecordLimits:
    if settings.sources:
        source = max(settings.sources.values(), key=lambda s: s.body_limit)
        body_limit, name = source.body_limit, source.name
    else:
        body_limit, name = settings.gateway.body_limit, "gateway"
    overhead = envelope_overhead(settings) + record_overhead(settings) + BATCH_HEADER
    return RecordLimits(body_limit, name, overhead, body_limit + overhead)


def producer_message_max_bytes(settings: Settings) -> int:
    """The producers' default: librdkafka's own, or more when the largest envelope needs it."""
    return max(LIBRDKAFKA_DEFAULT, record_limits(settings).batch)
