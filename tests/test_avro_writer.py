"""The envelope's own Avro writer emits exactly fastavro's bytes for the same schema."""

from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.avro_writer import encode_envelope, long_bytes
from schemas.envelope import ID_ORIGINS, TIME_ORIGINS, Envelope, Verification
from schemas.serde import EnvelopeDeserializer, EnvelopeSerializer, SerdeError, envelope_schema

LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=40)
OPTIONAL = st.none() | TEXT
DATETIME_MICROS = (-62_135_596_800_000_000, 253_402_300_799_999_999)

envelopes = st.builds(
    Envelope,
    event_id=TEXT,
    event_id_origin=st.sampled_from(ID_ORIGINS),
    provider=TEXT,
    source=TEXT,
    event_type=TEXT,
    occurred_at=LONGS,
    occurred_at_origin=st.sampled_from(TIME_ORIGINS),
    received_at=LONGS,
    ordering_key=TEXT,
    content_type=TEXT,
    body=st.binary(max_size=300),
    headers=st.dictionaries(TEXT, TEXT, max_size=5),
    verification=st.builds(Verification, scheme=TEXT, key_id=OPTIONAL, mode=OPTIONAL),
    request_id=TEXT,
    quarantine_reason=OPTIONAL,
)


def fastavro_bytes(envelope: Envelope) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, envelope_schema(), envelope.to_record())
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(envelopes)
def test_the_same_bytes_as_fastavro(envelope: Envelope) -> None:
    assert encode_envelope(envelope) == fastavro_bytes(envelope)
    # fastavro reads timestamp-micros as datetimes: years 1 to 9999 only
    if all(
        DATETIME_MICROS[0] <= t <= DATETIME_MICROS[1]
        for t in (envelope.occurred_at, envelope.received_at)
    ):
        assert EnvelopeDeserializer()(EnvelopeSerializer()(envelope)) == envelope


@pytest.mark.parametrize("value", [0, 1, -1, 63, 64, -65, 4095, 4096, 2**62, 2**63 - 1, -(2**63)])
def test_longs_at_the_edges(value: int) -> None:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", value)
    assert long_bytes(value) == out.getvalue()


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_a_long_out_of_range_is_a_serde_error(value: int) -> None:
    envelope = Envelope(
        "e",
        "PAYLOAD",
        "p",
        "s",
        "t",
        value,
        "PAYLOAD",
        0,
        "k",
        "c",
        b"",
        {},
        Verification("none"),
        "r",
    )
    with pytest.raises(SerdeError, match="does not fit an Avro long"):
        EnvelopeSerializer()(envelope)
