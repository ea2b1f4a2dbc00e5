"""Routing attributes: headers first, the value's framing always checked, decode as fallback."""

from __future__ import annotations

import struct

import pytest

from consumers.runtime.attributes import AttributeReader, UnroutableRecord
from schemas.records import ce_headers
from schemas.serde import EnvelopeDeserializer, EnvelopeSerializer
from tests.test_serde import make_envelope

DESERIALIZE = EnvelopeDeserializer()
READER = AttributeReader(DESERIALIZE, framed=DESERIALIZE.framed)
ENVELOPE = make_envelope()
VALUE = EnvelopeSerializer()(ENVELOPE)
HEADERS: list[tuple[str, bytes | None]] = list(ce_headers(ENVELOPE))


def test_complete_headers_and_a_framed_value_route_without_decoding() -> None:
    attrs = READER.read(ENVELOPE.event_id.encode(), VALUE, HEADERS)
    assert attrs.event_id == ENVELOPE.event_id.encode()
    assert attrs.subject == ENVELOPE.ordering_key.encode()
    assert attrs.occurred_us == ENVELOPE.occurred_at


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"garbage that is not Avro at all",
        b"\xc3\x01" + b"\x00" * 8 + b"body",  # single-object magic, unknown fingerprint
        struct.pack(">bI", 0, 7) + b"body",  # Confluent framing, no registry, unknown id
        VALUE[:10],  # the prefix alone
    ],
)
def test_garbage_under_good_headers_is_unroutable(value: bytes) -> None:
    with pytest.raises(UnroutableRecord) as info:
        READER.read(ENVELOPE.event_id.encode(), value, HEADERS)
    assert info.value.reason == "undecodable"


def test_missing_headers_fall_back_to_decoding_the_value() -> None:
    attrs = READER.read(None, VALUE, [])
    assert attrs.event_id == ENVELOPE.event_id.encode()
    assert attrs.source == ENVELOPE.source
    assert attrs.occurred_us == ENVELOPE.occurred_at
    with pytest.raises(UnroutableRecord) as info:
        READER.read(None, b"junk", [])
    assert info.value.reason == "no_event_id"
