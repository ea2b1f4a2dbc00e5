"""Avro binary decoding of the envelope, written for its one fixed schema.

The fan-out decodes every record it reads; fastavro's generic reader (schema
resolution, timestamps as datetimes, then `Envelope.from_record`) cost it about
a tenth of its CPU per HTTP delivery (docs/benchmarks.md). This reader walks the
fields of `envelope.avsc` in order, straight into an `Envelope`, the mirror of
`schemas/avro_writer.py`.

It is only a fast path: it takes well-formed records of exactly the schema it was
written for (`FINGERPRINT`) and raises on anything else (`NotFast` for an overlong
varint, a negative length or map block count, an enum or union index out of range
or not in its one-byte form, a timestamp fastavro could not make a datetime of;
IndexError for bytes cut short, UnicodeDecodeError for bad UTF-8). The
deserializer then decodes the same bytes with fastavro, which stays the reference:
what it accepts, how, and the errors it gives are what every reader sees.
`tests/test_avro_reader.py` holds the two equal over generated envelopes, every
union branch, and corrupted bytes.

A change to `envelope.avsc` changes its fingerprint: this reader then stands aside
(fastavro decodes everything) and its test fails until it is updated too.
"""

from __future__ import annotations

from schemas.envelope import ID_ORIGINS, TIME_ORIGINS, Envelope, Verification

# CRC-64-AVRO of the parsing canonical form of the envelope schema this reader decodes,
# as it appears on the wire (little-endian), like the single-object encoding's prefix.
FINGERPRINT = bytes.fromhex("62c27dcece84c5d3")

# fastavro reads timestamp-micros as datetimes: years 1 to 9999 only (it raises outside).
_MIN_MICROS, _MAX_MICROS = -62_135_596_800_000_000, 253_402_300_799_999_999
_UINT64 = 1 << 64


class NotFast(ValueError):
    """Not a record this reader vouches for: decode it with fastavro instead."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint of at most 10 bytes (fastavro's C reader wraps longer ones)."""
    n = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise NotFast("varint longer than 10 bytes")
    if n >= _UINT64:
        raise NotFast("varint beyond 64 bits")
    return (n >> 1) ^ -(n & 1), pos


def _length(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:  # 0..63 after zig-zag (negative ones are odd: rejected below)
        size, pos = b >> 1, pos + 1
        if b & 1:
            raise NotFast("negative length")
    else:
        size, pos = _varint(data, pos)
        if size < 0:
            raise NotFast("negative length")
    if pos + size > len(data):
        raise NotFast("truncated")
    return size, pos


def _text(data: bytes, pos: int) -> tuple[str, int]:
    b = data[pos]
    if b < 0x80 and not b & 1:  # the usual one-byte length, inlined
        pos += 1
        end = pos + (b >> 1)
        if end > len(data):
            raise NotFast("truncated")
    else:
        size, pos = _length(data, pos)
        end = pos + size
    return data[pos:end].decode("utf-8"), end  # bad UTF-8: UnicodeDecodeError


def _optional(data: bytes, pos: int) -> tuple[str | None, int]:
    branch = data[pos]
    if branch == 0:
        return None, pos + 1
    if branch == 2:
        return _text(data, pos + 1)
    raise NotFast("union index")


def _time(data: bytes, pos: int) -> tuple[int, int]:
    value, pos = _varint(data, pos)
    if not _MIN_MICROS <= value <= _MAX_MICROS:
        raise NotFast("timestamp outside what fastavro reads")
    return value, pos


def _symbol(data: bytes, pos: int, symbols: tuple[str, ...]) -> str:
    b = data[pos]
    if b & 1 or b >> 1 >= len(symbols):  # one byte holds every index of these enums
        raise NotFast("enum index")
    return symbols[b >> 1]


def decode_envelope(data: bytes, pos: int = 0) -> Envelope:
    """The envelope whose Avro body starts at `data[pos]`; bytes after its end are ignored
    (as fastavro does). Raises NotFast (IndexError when cut short, UnicodeDecodeError on
    bad UTF-8) wherever fastavro must decide."""
    event_id, pos = _text(data, pos)
    id_origin = _symbol(data, pos, ID_ORIGINS)
    provider, pos = _text(data, pos + 1)
    source, pos = _text(data, pos)
    event_type, pos = _text(data, pos)
    occurred_at, pos = _time(data, pos)
    time_origin = _symbol(data, pos, TIME_ORIGINS)
    received_at, pos = _time(data, pos + 1)
    ordering_key, pos = _text(data, pos)
    content_type, pos = _text(data, pos)
    size, pos = _length(data, pos)
    body = data[pos : pos + size]
    pos += size
    headers: dict[str, str] = {}
    while True:
        count, pos = _varint(data, pos)
        if count == 0:
            break
        if count < 0:
            raise NotFast("map block with a byte count")
        for _ in range(count):
            name, pos = _text(data, pos)
            headers[name], pos = _text(data, pos)
    scheme, pos = _text(data, pos)
    key_id, pos = _optional(data, pos)
    mode, pos = _optional(data, pos)
    request_id, pos = _text(data, pos)
    quarantine_reason, pos = _optional(data, pos)
    return Envelope(
        event_id=event_id,
        event_id_origin=id_origin,
        provider=provider,
        source=source,
        event_type=event_type,
        occurred_at=occurred_at,
        occurred_at_origin=time_origin,
        received_at=received_at,
        ordering_key=ordering_key,
        content_type=content_type,
        body=body,
        headers=headers,
        verification=Verification(scheme, key_id, mode),
        request_id=request_id,
        quarantine_reason=quarantine_reason,
    )
