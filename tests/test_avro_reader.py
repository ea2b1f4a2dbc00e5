"""The envelope's own Avro reader gives exactly what fastavro gives, or stands aside.

The reference is the deserializer with its fast path off (fastavro's schemaless
reader, then `Envelope.from_record`): on every input, well-formed or not, the
deserializer must return the same envelope or raise the same SerdeError with it on.
"""

from __future__ import annotations

import dataclasses
import io
import warnings

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import avro_reader
from schemas.avro_reader import NotFast, decode_envelope
from schemas.avro_writer import long_bytes
from schemas.envelope import Envelope
from schemas.serde import (
    EnvelopeDeserializer,
    EnvelopeSerializer,
    SerdeError,
    envelope_schema,
    envelope_schema_text,
    schema_fingerprint,
)
from tests.test_avro_writer import DATETIME_MICROS, envelopes

PREFIX = 10  # single-object framing: magic (2) + fingerprint (8)


def reference() -> EnvelopeDeserializer:
    d = EnvelopeDeserializer()
    d._fast = False  # fastavro only
    return d


REFERENCE = reference()
FAST = EnvelopeDeserializer()


def outcome(deserialize: EnvelopeDeserializer, data: bytes) -> tuple[str, object]:
    try:
        env = deserialize(data)
    except SerdeError as exc:
        return ("error", str(exc))
    return ("ok", (env, {k: type(v) for k, v in _fields(env).items()}))


def _fields(env: Envelope) -> dict[str, object]:
    return {f.name: getattr(env, f.name) for f in dataclasses.fields(Envelope)}


def in_datetime_range(env: Envelope) -> bool:
    return all(
        DATETIME_MICROS[0] <= t <= DATETIME_MICROS[1] for t in (env.occurred_at, env.received_at)
    )


def test_written_for_the_current_schema() -> None:
    """Fails when envelope.avsc changes: update the reader (and FINGERPRINT) with it."""
    assert schema_fingerprint(envelope_schema_text()) == avro_reader.FINGERPRINT
    assert FAST._fast


@settings(max_examples=400, deadline=None)
@given(envelopes)
def test_the_same_envelope_as_fastavro(envelope: Envelope) -> None:
    data = EnvelopeSerializer()(envelope)
    assert outcome(FAST, data) == outcome(REFERENCE, data)
    if in_datetime_range(envelope):
        # the fast path itself decoded it (it did not stand aside), equal in every field
        fast = decode_envelope(data, PREFIX)
        assert fast == envelope == REFERENCE(data)
        assert _fields(fast) == _fields(REFERENCE(data))
        assert type(fast.body) is bytes and type(fast.headers) is dict
    else:
        with pytest.raises(NotFast):  # fastavro raises on these: it decides
            decode_envelope(data, PREFIX)


@settings(max_examples=400, deadline=None)
@given(envelopes, st.data())
def test_corrupted_bytes_get_fastavros_answer(envelope: Envelope, data: st.DataObject) -> None:
    good = EnvelopeSerializer()(envelope)
    body = bytearray(good)
    kind = data.draw(st.sampled_from(["cut", "flip", "insert", "trail", "splice"]))
    at = data.draw(st.integers(PREFIX, len(body)))
    if kind == "cut":
        del body[at:]
    elif kind == "flip":
        if at < len(body):
            body[at] = data.draw(st.integers(0, 255))
    elif kind == "insert":
        body[at:at] = data.draw(st.binary(min_size=1, max_size=12))
    elif kind == "trail":
        body += data.draw(st.binary(min_size=1, max_size=12))
    else:
        body[at:] = data.draw(st.binary(max_size=40))
    bad = bytes(body)
    assert outcome(FAST, bad) == outcome(REFERENCE, bad)


def _record(**parts: bytes) -> bytes:
    """A single-object envelope built field by field (raw Avro pieces), for edge cases."""

    def text(s: str) -> bytes:
        raw = s.encode()
        return long_bytes(len(raw)) + raw

    fields = {
        "event_id": text("e1"),
        "event_id_origin": b"\x00",
        "provider": text("p"),
        "source": text("s"),
        "event_type": text("t"),
        "occurred_at": long_bytes(1_700_000_000_000_000),
        "occurred_at_origin": b"\x02",
        "received_at": long_bytes(1_700_000_000_000_001),
        "ordering_key": text("k"),
        "content_type": text("application/json"),
        "body": text("{}"),
        "headers": b"\x02" + text("user-agent") + text("x") + b"\x00",
        "scheme": text("hmac"),
        "key_id": b"\x02" + text("K1"),
        "mode": b"\x00",
        "request_id": text("r"),
        "quarantine_reason": b"\x00",
    }
    fields.update(parts)
    prefix = EnvelopeSerializer()._so_prefix
    return prefix + b"".join(fields.values())


def _zigzag_varint(value: int) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", value)
    return out.getvalue()


EDGE_CASES = {
    "plain": {},
    "trailing bytes (ignored by both)": {"quarantine_reason": b"\x00\xff\xff"},
    "every optional set": {"mode": b"\x02\x02m", "quarantine_reason": b"\x02\x02q"},
    "empty strings and body": {"event_id": b"\x00", "body": b"\x00", "headers": b"\x00"},
    "enum index -1": {"event_id_origin": b"\x01"},
    "enum index 3": {"event_id_origin": b"\x06"},
    "time enum index -3": {"occurred_at_origin": b"\x05"},
    "enum index as a two-byte varint": {"event_id_origin": b"\x80\x00"},
    "union index 2": {"key_id": b"\x04\x02k"},
    "union index -1": {"mode": b"\x01"},
    "union index as a two-byte varint": {"mode": b"\x80\x00"},
    "negative string length": {"provider": b"\x03p"},
    "string longer than the record": {"request_id": b"\x7e"},
    "bad utf-8": {"source": b"\x04\xff\xfe"},
    "overlong utf-8": {"source": b"\x04\xc0\xaf"},
    "surrogate in utf-8": {"source": b"\x06\xed\xa0\x80"},
    "non-canonical length varint": {"source": b"\x82\x00s"},
    "11-byte varint": {"occurred_at": b"\x80" * 10 + b"\x01"},
    "10-byte varint beyond 64 bits": {"occurred_at": b"\xff" * 9 + b"\x7f"},
    "longest long": {"occurred_at": _zigzag_varint(2**63 - 1)},
    "shortest long": {"received_at": _zigzag_varint(-(2**63))},
    "first datetime micro": {"occurred_at": _zigzag_varint(DATETIME_MICROS[0])},
    "one before it": {"occurred_at": _zigzag_varint(DATETIME_MICROS[0] - 1)},
    "last datetime micro": {"received_at": _zigzag_varint(DATETIME_MICROS[1])},
    "one after it": {"received_at": _zigzag_varint(DATETIME_MICROS[1] + 1)},
    "negative map block (with its byte size)": {
        "headers": b"\x01" + _zigzag_varint(6) + b"\x02a\x02b" + b"\x00"
    },
    "two map blocks": {"headers": b"\x02\x02a\x02b\x02\x02c\x02d\x00"},
    "duplicate header name": {"headers": b"\x04\x02a\x02b\x02a\x02c\x00"},
    "map block count beyond the record": {"headers": b"\x7e\x02a\x02b"},
    "cut in the body": {"body": b"\x10ab"},
}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases_match_fastavro(name: str) -> None:
    data = _record(**EDGE_CASES[name])
    assert outcome(FAST, data) == outcome(REFERENCE, data)


def test_edge_cases_cover_both_answers() -> None:
    """The table holds records fastavro reads and records it refuses (a table of one kind
    would prove half)."""
    kinds = {outcome(REFERENCE, _record(**parts))[0] for parts in EDGE_CASES.values()}
    assert kinds == {"ok", "error"}


def test_registry_framing_takes_the_fast_path() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serializer = EnvelopeSerializer("mock://avro-reader-test")
    registry = serializer._registry
    data = serializer(_envelope(), "webhooks.x")
    reader = EnvelopeDeserializer(registry=registry)
    assert reader(data) == _envelope()
    assert reader._fast_ids == {int.from_bytes(data[1:5], "big")}
    assert decode_envelope(data, 5) == _envelope()
    cut = data[:-3]
    ref = EnvelopeDeserializer(registry=registry)
    ref._fast = False
    assert (
        outcome(reader, cut) == outcome(ref, cut) == ("error", "cannot decode envelope: EOFError")
    )


def _envelope() -> Envelope:
    return REFERENCE(_record())


def test_fastavro_reads_the_schema_this_reader_is_for() -> None:
    """The reference itself: fastavro on the current schema reads `_record()` as expected."""
    rec = fastavro.schemaless_reader(io.BytesIO(_record()[PREFIX:]), envelope_schema(), None)
    assert isinstance(rec, dict) and rec["headers"] == {"user-agent": "x"}
