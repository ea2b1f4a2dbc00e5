"""The Kafka record contract: every header the bridge writes, and how it is read back.

One module for both sides, so that the gateway, the stages, the fan-out and replay
cannot disagree on a name or a value:

- **CloudEvents binary mode** (`ce_headers`): ``ce_id`` (the event id), ``ce_source``
  (``/webhooks/<source>``), ``ce_type``, ``ce_time`` (ISO-8601, microseconds, UTC),
  ``ce_subject`` (the ordering key), ``ce_specversion`` and ``content-type``. A
  consumer routes on them without decoding the Avro value.
- **late**: ``late: 1`` on a record the reorderer released after its window.
- **quarantine**: ``x-quarantine-reason``, ``x-quarantine-stage`` and, for a record a
  stage could not use, where it came from (``x-origin-topic``/``-partition``/``-offset``).
- **dead letters**: the ``x-dlq-*`` headers on a sink's DLQ record: why the sink gave
  up and where the event came from (``x-dlq-topic``/``-partition``/``-offset``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from schemas.envelope import CE_SPECVERSION, Envelope, micros_to_iso

KafkaHeaders = list[tuple[str, bytes]]
Headers = Sequence[tuple[str, bytes | None]]

CE_SOURCE_PREFIX = "/webhooks/"
LATE = "late"
LATE_HEADER = (LATE, b"1")
LATE_VALUES = (b"1", b"true")  # what `is_late` takes as late
QUARANTINE_REASON = "x-quarantine-reason"
QUARANTINE_STAGE = "x-quarantine-stage"
ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET = (
    "x-origin-topic",
    "x-origin-partition",
    "x-origin-offset",
)
DLQ_PREFIX = "x-dlq-"
DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET = "x-dlq-topic", "x-dlq-partition", "x-dlq-offset"


def ce_source(source: str) -> bytes:
    return f"{CE_SOURCE_PREFIX}{source}".encode()


def source_of(ce_source_value: bytes) -> str:
    """The source name in a ``ce_source`` header (``/webhooks/<source>``)."""
    return ce_source_value.decode("utf-8", "replace").removeprefix(CE_SOURCE_PREFIX)


def ce_headers(env: Envelope) -> KafkaHeaders:
    """CloudEvents binary-mode attributes, so consumers can route without decoding."""
    return [
        ("ce_specversion", CE_SPECVERSION.encode()),
        ("ce_id", env.event_id.encode()),
        ("ce_source", ce_source(env.source)),
        ("ce_type", env.event_type.encode()),
        ("ce_time", micros_to_iso(env.occurred_at).encode()),
        ("ce_subject", env.ordering_key.encode()),
        ("content-type", b"application/avro"),
    ]


def header_value(headers: Headers | None, name: str) -> bytes | None:
    """Last value of a Kafka header (later headers override earlier ones)."""
    found: bytes | None = None
    for key, value in headers or ():
        if key == name:
            found = value
    return found


def is_late(headers: Headers | None) -> bool:
    return header_value(headers, LATE) in LATE_VALUES


def quarantine_headers(
    reason: str, stage: str, origin: tuple[str, int, int] | None = None
) -> KafkaHeaders:
    """What a quarantined record carries besides its own headers."""
    out = [(QUARANTINE_REASON, reason.encode()), (QUARANTINE_STAGE, stage.encode())]
    if origin is not None:
        topic, partition, offset = origin
        out += [
            (ORIGIN_TOPIC, topic.encode()),
            (ORIGIN_PARTITION, str(partition).encode()),
            (ORIGIN_OFFSET, str(offset).encode()),
        ]
    return out


def dlq_headers(
    *,
    reason: str,
    last_status: int | None,
    attempts: int,
    sink: str,
    detail: str,
    origin: tuple[str, int, int],
) -> KafkaHeaders:
    """Why a sink gave up on an event, and where the event came from."""
    topic, partition, offset = origin
    return [
        ("x-dlq-reason", reason.encode()),
        ("x-dlq-last-status", str(last_status or "").encode()),
        ("x-dlq-attempts", str(attempts).encode()),
        ("x-dlq-sink", sink.encode()),
        ("x-dlq-detail", detail[:200].encode()),
        (DLQ_TOPIC, topic.encode()),
        (DLQ_PARTITION, str(partition).encode()),
        (DLQ_OFFSET, str(offset).encode()),
    ]


def without_dlq(headers: Iterable[tuple[str, bytes]]) -> KafkaHeaders:
    """A DLQ record's headers as the event had them before it was dead-lettered."""
    return [(k, v) for k, v in headers if not k.startswith(DLQ_PREFIX)]
