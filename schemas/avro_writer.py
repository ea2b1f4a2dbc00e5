"""Avro binary encoding of the envelope, written for its one fixed schema.

The gateway encodes every request's envelope; fastavro's generic writer walks the
schema for each record (plus `Envelope.to_record`), which cost the gateway more
CPU than verifying the HMAC (docs/benchmarks.md). This writer emits the same
bytes field by field, in `envelope.avsc`'s order (Avro binary: zig-zag varint
longs, length-prefixed strings and bytes, enum indexes, map blocks, union
branch indexes). `tests/test_avro_writer.py` holds it to fastavro byte for byte
over generated envelopes, and every reader still decodes with fastavro.

A change to `envelope.avsc` needs the same change here: the test fails until then.
"""

from __future__ import annotations

from schemas.envelope import ID_ORIGINS, TIME_ORIGINS, Envelope

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_ID_ORIGIN = {name: bytes([i * 2]) for i, name in enumerate(ID_ORIGINS)}
_TIME_ORIGIN = {name: bytes([i * 2]) for i, name in enumerate(TIME_ORIGINS)}
_NULL = b"\x00"  # union branch 0 (null); also an empty map's end block
_SOME = b"\x02"  # union branch 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = tuple(_varint(n << 1) for n in range(4096))  # zig-zag of 0..4095


def long_bytes(value: int) -> bytes:
    if 0 <= value < 4096:
        return _SMALL[value]
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise ValueError(f"{value} does not fit an Avro long")
    return _varint((value << 1) ^ (value >> 63))


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return long_bytes(len(data)) + data


def _optional(value: str | None) -> bytes:
    return _NULL if value is None else _SOME + _text(value)


def encode_envelope(envelope: Envelope) -> bytes:
    """The Avro binary body of `envelope` under the current `envelope.avsc`."""
    e = envelope
    try:
        id_origin = _ID_ORIGIN[e.event_id_origin]
        time_origin = _TIME_ORIGIN[e.occurred_at_origin]
    except KeyError as exc:
        raise ValueError(f"not a symbol of the envelope's enums: {exc.args[0]!r}") from None
    parts = [
        _text(e.event_id),
        id_origin,
        _text(e.provider),
        _text(e.source),
        _text(e.event_type),
        long_bytes(e.occurred_at),
        time_origin,
        long_bytes(e.received_at),
        _text(e.ordering_key),
        _text(e.content_type),
        long_bytes(len(e.body)),
        e.body,
    ]
    headers = e.headers
    if headers:
        parts.append(long_bytes(len(headers)))
        for name, value in headers.items():
            parts.append(_text(name))
            parts.append(_text(value))
    parts.append(_NULL)
    v = e.verification
    parts += [
        _text(v.scheme),
        _optional(v.key_id),
        _optional(v.mode),
        _text(e.request_id),
        _optional(e.quarantine_reason),
    ]
    return b"".join(parts)
