from __future__ import annotations

import io
import json
import struct
import warnings
from pathlib import Path

import fastavro
import pytest

from schemas.envelope import Envelope, Verification, micros_to_iso
from schemas.records import ce_headers, header_value
from schemas.serde import (
    SO_MAGIC,
    EnvelopeDeserializer,
    EnvelopeSerializer,
    SerdeError,
    envelope_schema_text,
    known_envelope_schemas,
    schema_fingerprint,
)

PINNED_V1 = Path(__file__).parent / "data" / "envelope_v1.avsc"


def make_envelope(**overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "event_id": "evt_1",
        "event_id_origin": "PAYLOAD",
        "provider": "fintoc",
        "source": "fintoc",
        "event_type": "link.credentials_changed",
        "occurred_at": 1_707_480_523_123_456,
        "occurred_at_origin": "PAYLOAD",
        "received_at": 1_707_480_524_000_000,
        "ordering_key": "link_1",
        "content_type": "application/json",
        "body": b'{"id":"evt_1","x":"\xc3\xa9"}',
        "headers": {"user-agent": "fintoc"},
        "verification": Verification("fintoc", "K1", None),
        "request_id": "req-1",
    }
    fields.update(overrides)
    return Envelope(**fields)  # type: ignore[arg-type]


def test_single_object_round_trip() -> None:
    env = make_envelope(quarantine_reason="body is not valid JSON", body=b"\xff\x00raw")
    data = EnvelopeSerializer()(env)
    assert data[:2] == SO_MAGIC
    assert data[2:10] == schema_fingerprint(envelope_schema_text())
    assert EnvelopeDeserializer()(data) == env


def test_confluent_framing_with_mock_registry() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serializer = EnvelopeSerializer("mock://serde-test")
        registry = serializer._registry
    assert registry is not None
    env = make_envelope()
    data = serializer(env, "webhooks.fintoc")
    assert data[0] == 0
    (schema_id,) = struct.unpack(">I", data[1:5])
    assert registry.get_schema(schema_id).schema_str == envelope_schema_text()
    assert EnvelopeDeserializer(registry=registry)(data) == env
    # The same reader also takes single-object bytes.
    assert EnvelopeDeserializer(registry=registry)(EnvelopeSerializer()(env)) == env


def test_confluent_bytes_without_registry_are_refused() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = EnvelopeSerializer("mock://serde-test-2")(make_envelope(), "t")
    with pytest.raises(SerdeError, match="no schema registry"):
        EnvelopeDeserializer()(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x07junk", SO_MAGIC + b"\x00" * 8 + b"x", EnvelopeSerializer()(make_envelope())[:-7]],
)
def test_garbage_is_a_serde_error(data: bytes) -> None:
    with pytest.raises(SerdeError):
        EnvelopeDeserializer()(data)


def test_current_schema_is_compatible_with_pinned_v1() -> None:
    """The first schema is pinned: the current one may only add fields with defaults."""
    v1 = json.loads(PINNED_V1.read_text())
    current = json.loads(envelope_schema_text())
    v1_fields = {f["name"]: f for f in v1["fields"]}
    current_fields = {f["name"]: f for f in current["fields"]}
    for name, field in v1_fields.items():
        assert current_fields[name]["type"] == field["type"], f"type of {name} changed"
    for name in current_fields.keys() - v1_fields.keys():
        assert "default" in current_fields[name], f"new field {name} needs a default"
    # Backward: a v1 record decodes with the current reader. Forward: the reverse.
    env = make_envelope()
    old = io.BytesIO()
    fastavro.schemaless_writer(old, fastavro.parse_schema(v1), env.to_record())
    old_fp = schema_fingerprint(PINNED_V1.read_text())
    decoded = EnvelopeDeserializer(known_schemas={old_fp: PINNED_V1.read_text()})(
        SO_MAGIC + old_fp + old.getvalue()
    )
    assert decoded.event_id == env.event_id
    new = EnvelopeSerializer()(env)[10:]
    record = fastavro.schemaless_reader(
        io.BytesIO(new), fastavro.parse_schema(current), fastavro.parse_schema(v1)
    )
    assert isinstance(record, dict)
    assert record["event_id"] == env.event_id


def test_every_released_envelope_version_is_shipped_and_readable() -> None:
    """The schema the gateway writes is in schemas/history/ (readers know it before any
    writer uses it), and a record of every shipped version decodes with no extra help."""
    known = known_envelope_schemas()
    assert schema_fingerprint(envelope_schema_text()) in known
    env = make_envelope()
    for fp, text in known.items():
        out = io.BytesIO()
        fastavro.schemaless_writer(out, fastavro.parse_schema(json.loads(text)), env.to_record())
        assert EnvelopeDeserializer()(SO_MAGIC + fp + out.getvalue()).event_id == env.event_id


def test_a_reader_knows_a_newer_version_once_it_is_shipped() -> None:
    """Readers first: a v2 (one added field with a default) shipped in the history is
    read by a reader whose own schema is still v1, and the reverse."""
    v1 = json.loads(envelope_schema_text())
    v2 = {**v1, "fields": [*v1["fields"], {"name": "tenant", "type": "string", "default": ""}]}
    v2_text = json.dumps(v2)
    v2_fp = schema_fingerprint(v2_text)
    env = make_envelope()
    record = {**env.to_record(), "tenant": "acme"}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(v2), record)
    framed = SO_MAGIC + v2_fp + out.getvalue()
    with pytest.raises(SerdeError, match="unknown schema fingerprint"):
        EnvelopeDeserializer()(framed)  # not shipped yet: not readable
    assert EnvelopeDeserializer(known_schemas={v2_fp: v2_text})(framed).event_id == env.event_id


def test_cloudevents_headers() -> None:
    headers = ce_headers(make_envelope())
    assert header_value(headers, "ce_id") == b"evt_1"
    assert header_value(headers, "ce_source") == b"/webhooks/fintoc"
    assert header_value(headers, "ce_type") == b"link.credentials_changed"
    assert header_value(headers, "ce_time") == b"2024-02-09T12:08:43.123456Z"
    assert header_value(headers, "ce_subject") == b"link_1"
    assert header_value(headers, "ce_specversion") == b"1.0"
    assert micros_to_iso(0) == "1970-01-01T00:00:00.000000Z"


def test_micros_to_iso_agrees_with_datetime_across_its_second_cache() -> None:
    """RFC 3339 in UTC with six fraction digits, the same as datetime's, for times before
    and after the epoch and for more distinct seconds than the cache keeps (it empties)."""
    import random
    from datetime import UTC, datetime, timedelta

    from schemas import envelope

    rng = random.Random(7)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    values = [0, 1, -1, 999_999, 1_000_000, -1_000_000, -1_000_001, 1_764_496_800_000_001]
    values += [rng.randrange(-(10**15), 4 * 10**15) for _ in range(3 * envelope._SECONDS_KEPT)]
    for micros in values + values[:50]:  # the second pass hits the cache
        expected = (epoch + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert micros_to_iso(micros) == expected, micros
    assert len(envelope._SECONDS) <= envelope._SECONDS_KEPT
