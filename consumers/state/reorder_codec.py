"""Binary form of one buffered record in ``<prefix>.<provider>.reorder-state``.

Key: ``b"r" + input offset (>q)`` (the input partition is the state partition),
so a record consumed twice (after an abort) overwrites itself; a tombstone for
the same key marks it released. ``WATERMARK_KEY`` holds the partition's last
released occurred_at, so lateness is judged the same after a restart.

Value: arrival (>d, wall seconds), occurred_us (>q), window_s (>d), then the
record key, value and headers, each length-prefixed (>i, -1 for None).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HEAD = struct.Struct(">dqd")
_LEN = struct.Struct(">i")
_OFFSET = struct.Struct(">q")
RECORD_PREFIX = b"r"
WATERMARK_KEY = b"\x00watermark"

Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class BufferedRecord:
    offset: int  # in the input partition
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True, slots=True)
class StoredRecord:
    arrival: float
    occurred_us: int
    window_s: float
    record: BufferedRecord


def record_key(offset: int) -> bytes:
    return RECORD_PREFIX + _OFFSET.pack(offset)


def offset_of(key: bytes) -> int | None:
    if len(key) != 1 + _OFFSET.size or not key.startswith(RECORD_PREFIX):
        return None
    return int(_OFFSET.unpack_from(key, 1)[0])


def encode(arrival: float, occurred_us: int, window_s: float, record: BufferedRecord) -> bytes:
    parts = [
        _HEAD.pack(arrival, occurred_us, window_s),
        _blob(record.key),
        _blob(record.value),
        _LEN.pack(len(record.headers)),
    ]
    for name, value in record.headers:
        parts.append(_blob(name.encode()))
        parts.append(_blob(value))
    return b"".join(parts)


def decode(offset: int, data: bytes) -> StoredRecord:
    arrival, occurred_us, window_s = _HEAD.unpack_from(data)
    pos = _HEAD.size
    key, pos = _read(data, pos)
    value, pos = _read(data, pos)
    (count,) = _LEN.unpack_from(data, pos)
    pos += _LEN.size
    headers: Headers = []
    for _ in range(count):
        name, pos = _read(data, pos)
        hvalue, pos = _read(data, pos)
        headers.append(((name or b"").decode(), hvalue))
    return StoredRecord(arrival, occurred_us, window_s, BufferedRecord(offset, key, value, headers))


def encode_watermark(occurred_us: int) -> bytes:
    return _OFFSET.pack(occurred_us)


def decode_watermark(data: bytes) -> int:
    return int(_OFFSET.unpack(data)[0])


def _blob(data: bytes | None) -> bytes:
    if data is None:
        return _LEN.pack(-1)
    return _LEN.pack(len(data)) + data


def _read(data: bytes, pos: int) -> tuple[bytes | None, int]:
    (size,) = _LEN.unpack_from(data, pos)
    pos += _LEN.size
    if size < 0:
        return None, pos
    return data[pos : pos + size], pos + size
