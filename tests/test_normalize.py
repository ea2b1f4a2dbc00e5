from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gateway.normalize import body_hash, normalize, parse_time
from gateway.verify.base import InboundRequest, VerifiedRequest
from schemas.envelope import (
    HEADER_ALLOW_LIST,
    MAX_HEADER_VALUE,
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_TYPE_LENGTH,
    Envelope,
    Verification,
)
from schemas.records import ce_headers
from schemas.serde import EnvelopeDeserializer, EnvelopeSerializer
from schemas.sizes import BATCH_HEADER, PER_HEADER, RECORD_FIELDS, STAGE_HEADERS, record_limits
from tests.support import gateway_toml, settings_from_toml

SETTINGS = settings_from_toml(
    gateway_toml("k:9092", "t")
    + """
[sources.jpmorgan]
scheme = "jpmorgan"
[sources.jpmorgan.verify]
methods = ["static-headers"]
static_headers = { "X-Custom-Key" = "JPMORGAN_WEBHOOK_SECRET" }
"""
)
RECEIVED = 1_700_000_000_000_000


def envelope_for(
    source: str, document: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> Any:
    body = raw if raw is not None else json.dumps(document).encode()
    verified = VerifiedRequest(
        InboundRequest(headers or {"content-type": "application/json"}, body),
        scheme=SETTINGS.sources[source].scheme,
        key_id="K",
    )
    return normalize(SETTINGS.sources[source], verified, received_at_us=RECEIVED, request_id="r1")


def test_jiko_document_defaults() -> None:
    env = envelope_for(
        "jiko",
        {
            "event_type": "card.transaction.approved",
            "payload": {"card_id": "c1", "created_at": "2024-02-09T12:08:43Z"},
        },
    )
    assert env.event_type == "card.transaction.approved"
    assert env.event_id_origin == "BODY_HASH" and env.event_id.startswith("sha256:")
    assert env.ordering_key == "c1"
    assert env.occurred_at == 1_707_480_523_000_000 and env.occurred_at_origin == "PAYLOAD"
    assert env.quarantine_reason is None
    assert env.verification.key_id == "K"


def test_justwallet_literal_dotted_type_key_and_payout_ordering() -> None:
    env = envelope_for(
        "justwallet",
        {
            "event.type": "payout",
            "data": {"id": "po_1", "updated_at": "2024-02-09T12:08:43.000000Z"},
        },
    )
    assert env.event_type == "payout"
    assert env.ordering_key == "po_1"
    assert env.event_id_origin == "BODY_HASH"  # data.id is the payout, not the event


def test_fintoc_uses_provider_id() -> None:
    env = envelope_for(
        "fintoc", {"id": "evt_1", "type": "link.credentials_changed", "data": {"id": "link_9"}}
    )
    assert (env.event_id, env.event_id_origin) == ("evt_1", "PAYLOAD")
    assert env.ordering_key == "link_9"
    assert env.occurred_at == RECEIVED and env.occurred_at_origin == "RECEIVED"


# Fintoc's documented account.refresh_intent.succeeded event ("Wait for the results using a
# Webhook Endpoint"): data is the intent and has no id of its own; the account is in
# refreshed_object_id.
FINTOC_REFRESH_INTENT: dict[str, Any] = {
    "id": "evt_00000000",
    "type": "account.refresh_intent.succeeded",
    "mode": "live",
    "created_at": "2021-12-07T21:43:54.343Z",
    "data": {
        "object": "refresh_intent",
        "refreshed_object": "account",
        "refreshed_object_id": "acc_00000000",
        "status": "succeeded",
        "created_at": "2021-12-03T00:00:00.000Z",
        "type": "only_last",
        "new_movements": 5,
    },
    "object": "event",
}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (FINTOC_REFRESH_INTENT["data"], "acc_00000000"),
        ({**FINTOC_REFRESH_INTENT["data"], "id": "ri_1"}, "acc_00000000"),  # not the intent
        ({"id": "link_9", "object": "link"}, "link_9"),  # other events: the object itself
    ],
)
def test_fintoc_orders_refresh_intents_by_the_refreshed_object(data: Any, key: str) -> None:
    env = envelope_for("fintoc", {**FINTOC_REFRESH_INTENT, "data": data})
    assert env.ordering_key == key
    assert (env.event_id, env.event_type) == ("evt_00000000", "account.refresh_intent.succeeded")
    assert env.occurred_at_origin == "PAYLOAD"


# From J.P. Morgan's "Notification payload samples" (Embedded Payments): the resource is a
# JSON string, and some events repeat it parsed as resourceObject.
JPM_CLIENT = {
    "eventId": "903",
    "eventType": "CLIENT_ONBOARDING",
    "resourceType": "CLIENTS",
    "resource": '{"id":"3000005555","status":"NEW","hasOutstandingInformation":false,'
    '"customerIdentityStatus":"NEW"}',
}
JPM_ACCOUNT = {
    "eventId": "5120",
    "eventType": "ACCOUNT_CREATED",
    "resourceType": "ACCOUNTS",
    "resource": '{"id":"9c7798a8643a40068cb4d12d97ab68f5","clientId":"1000020694",'
    '"type":"LIMITED_DDA","state":"OPEN","createdAt":"2024-06-17T14:04:22.963402108Z"}',
    "resourceObject": {
        "id": "9c7798a8643a40068cb4d12d97ab68f5",
        "clientId": "1000020694",
        "type": "LIMITED_DDA",
        "state": "OPEN",
        "createdAt": "2024-06-17T14:04:22.963402108Z",
    },
}


@pytest.mark.parametrize(
    ("document", "event_id", "event_type", "key"),
    [
        (JPM_CLIENT, "903", "CLIENT_ONBOARDING", "3000005555"),
        (JPM_ACCOUNT, "5120", "ACCOUNT_CREATED", "9c7798a8643a40068cb4d12d97ab68f5"),
        (
            {k: v for k, v in JPM_ACCOUNT.items() if k != "resourceObject"},
            "5120",
            "ACCOUNT_CREATED",
            "9c7798a8643a40068cb4d12d97ab68f5",
        ),
    ],
)
def test_jpmorgan_documented_payloads(
    document: dict[str, Any], event_id: str, event_type: str, key: str
) -> None:
    env = envelope_for("jpmorgan", document)
    assert (env.event_id, env.event_id_origin, env.event_type) == (event_id, "PAYLOAD", event_type)
    assert env.ordering_key == key
    # The resource's createdAt is not the event's time; none is documented.
    assert (env.occurred_at, env.occurred_at_origin) == (RECEIVED, "RECEIVED")


def test_same_event_resent_with_other_whitespace_and_key_order_has_same_id() -> None:
    a = envelope_for("jiko", None, raw=b'{"event_type":"x","payload":{"a":1,"b":2}}')
    b = envelope_for("jiko", None, raw=b'{ "payload": {"b": 2, "a": 1},\n "event_type": "x" }')
    c = envelope_for("jiko", None, raw=b'{"event_type":"x","payload":{"a":1,"b":3}}')
    assert a.event_id == b.event_id != c.event_id


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf-8", "body is not valid UTF-8"),
        (b"{not json", "body is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON"),
        (b'{"payload": {}}', "no event type at event_type"),
        (b'["event_type"]', "no event type at event_type"),
        (b'{"event_type": {"nested": 1}}', "no event type at event_type"),
    ],
)
def test_unusable_verified_body_is_quarantined_not_lost(raw: bytes, reason: str) -> None:
    env = envelope_for("jiko", None, raw=raw)
    assert env.quarantine_reason == reason
    assert env.body == raw
    assert env.event_id.startswith("sha256:")


def test_headers_are_allow_listed() -> None:
    env = envelope_for(
        "fintoc",
        {"id": "e", "type": "t"},
        headers={
            "content-type": "application/json",
            "authorization": "Bearer x",
            "cookie": "c=1",
            "fintoc-signature": "t=1,v1=ab",
            "user-agent": "ua",
        },
    )
    assert env.headers == {"content-type": "application/json", "user-agent": "ua"}


def test_key_falls_back_to_the_event_id_not_the_provider() -> None:
    env = envelope_for("fintoc", {"id": "e", "type": "t"})
    assert env.ordering_key == "e"


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("2024-02-09T12:08:43.000000Z", 1_707_480_523_000_000),
        ("2024-02-09T12:08:43.123456789Z", 1_707_480_523_123_456),
        ("2024-02-09T13:08:43+01:00", 1_707_480_523_000_000),
        ("2024-02-09T12:08:43", 1_707_480_523_000_000),
        (1_707_480_523, 1_707_480_523_000_000),
        (1_707_480_523.5, 1_707_480_523_500_000),
        ("1707480523", 1_707_480_523_000_000),
        (1_707_480_523_000, 1_707_480_523_000_000),
        (1_707_480_523_000_000, 1_707_480_523_000_000),
        (1_707_480_523_000_000_000, 1_707_480_523_000_000),
    ],
)
def test_parse_time(value: Any, micros: int) -> None:
    assert parse_time(value) == micros


@pytest.mark.parametrize(
    "value", ["yesterday", True, None, float("nan"), -5, "9999-01-01T00:00:00Z", {"a": 1}]
)
def test_unparseable_time_is_none(value: Any) -> None:
    assert parse_time(value) is None


def test_body_hash_of_non_json_is_raw_hash() -> None:
    import hashlib

    assert body_hash(None, b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def fallbacks_for(source: str, document: Any, signed_timestamp: float | None = None) -> Any:
    """(envelope, fields reported as fallbacks)."""
    verified = VerifiedRequest(
        InboundRequest({"content-type": "application/json"}, json.dumps(document).encode()),
        scheme=SETTINGS.sources[source].scheme,
        key_id="K",
        signed_timestamp=signed_timestamp,
    )
    found: list[str] = []
    env = normalize(
        SETTINGS.sources[source],
        verified,
        received_at_us=RECEIVED,
        request_id="r1",
        on_fallback=found.append,
    )
    return env, found


@pytest.mark.parametrize(
    ("source", "document", "fields"),
    [
        (  # documented: quote_creation.failed has no data.id
            "justwallet",
            {"event.type": "quote_creation.failed", "data": {"created_at": "2024-02-09T12:08:43Z"}},
            ["ordering_key"],
        ),
        ("justwallet", {"event.type": "payout", "data": {"id": "po_1"}}, ["occurred_at"]),
        ("jpmorgan", {"eventId": "7", "eventType": "ACCOUNT_CLOSED"}, ["ordering_key"]),
        ("jpmorgan", {"eventType": "ACCOUNT_CLOSED", "resource": "{}"}, ["id", "ordering_key"]),
        (
            "jpmorgan",
            {"eventId": "7", "eventType": "X", "resource": '{"id": true}'},
            ["ordering_key"],
        ),
        (
            "fintoc",
            {"id": "evt_1", "type": "link.created", "data": {}},
            ["occurred_at", "ordering_key"],
        ),
        ("fintoc", {"id": "evt_1", "data": {"id": "l"}, "created_at": "2024-01-01"}, ["type"]),
        ("jiko", {"event_type": "x", "payload": {"card_id": "c"}}, ["occurred_at"]),
        ("jiko", {"event_type": "x", "payload": {"updated_at": "2024-01-01"}}, ["ordering_key"]),
        ("jiko", {"event_type": "x", "payload": {"id": "p", "created_at": "2024-01-01"}}, []),
    ],
)
def test_fallbacks_are_reported_by_field(source: str, document: Any, fields: list[str]) -> None:
    """Only fields whose configured selector found nothing (Jiko has no id selector: its
    body-hash id is the design, not a fallback)."""
    env, found = fallbacks_for(source, document)
    assert found == fields
    if "ordering_key" in fields:  # its own lane, never one shared by the provider
        assert env.ordering_key == env.event_id != SETTINGS.sources[source].provider


def test_two_keyless_events_get_two_lanes() -> None:
    a, _ = fallbacks_for("justwallet", {"event.type": "quote_creation.failed", "data": {"n": 1}})
    b, _ = fallbacks_for("justwallet", {"event.type": "quote_creation.failed", "data": {"n": 2}})
    assert a.ordering_key != b.ordering_key
    assert {a.ordering_key, b.ordering_key} == {a.event_id, b.event_id}


def test_signed_timestamp_is_no_fallback() -> None:
    env, found = fallbacks_for("fintoc", {"id": "e", "type": "t", "data": {"id": "l"}}, 1.7e9)
    assert (found, env.occurred_at_origin) == ([], "HEADER")


def test_unparseable_body_falls_back_in_every_selected_field() -> None:
    verified = VerifiedRequest(InboundRequest({}, b"{not json"), scheme="fintoc", key_id="K")
    found: list[str] = []
    normalize(
        SETTINGS.sources["fintoc"],
        verified,
        received_at_us=RECEIVED,
        request_id="r",
        on_fallback=found.append,
    )
    assert found == ["id", "type", "occurred_at", "ordering_key"]


def test_scheme_without_ordering_selector_keeps_the_provider_key() -> None:
    settings = settings_from_toml(
        gateway_toml("k:9092", "t", '[sources.open]\nscheme = "none"\nallow_unverified = true\n')
    )
    verified = VerifiedRequest(InboundRequest({}, b'{"id": "e1", "type": "t"}'), scheme="none")
    found: list[str] = []
    env = normalize(
        settings.sources["open"],
        verified,
        received_at_us=RECEIVED,
        request_id="r",
        on_fallback=found.append,
    )
    assert (env.ordering_key, found) == ("open", [])


# --------------------------------------------------------------------------- never raises

FUZZ_SETTINGS = settings_from_toml(
    gateway_toml("k:9092", "t")
    + "".join(
        f'[sources.fuzz-{field.replace("_", "-")}]\nscheme = "jiko"\n'
        'secrets = ["JIKO_WEBHOOK_SECRET"]\n'
        f'[sources.fuzz-{field.replace("_", "-")}.select]\n{field} = "v"\n'
        for field in ("id", "type", "occurred_at", "ordering_key")
    )
)
# JSON the standard library reads but orjson refuses, and numbers no clock or id can mean
NASTY_TOKENS = (
    "1" + "0" * 400,
    "-1" + "0" * 400,
    "1" + "0" * 5000,  # beyond Python's int/str digit limit
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "18446744073709551616",
    "-9223372036854775809",
    "1.5e17",
    "253402300800",  # 10000-01-01 in seconds
    '"9999-12-31T23:59:59-23:59"',
    '"0001-01-01T00:00:00+23:59"',
    '"\\ud800"',
    '"' + "x" * 5000 + '"',
    "true",
    "null",
    '{"nested": {"id": 1}}',
    "[1, 2, 3]",
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**450), max_value=10**450)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
value_texts = st.sampled_from(NASTY_TOKENS) | json_values.map(lambda v: json.dumps(v))


@pytest.mark.parametrize("field", ["id", "type", "occurred_at", "ordering_key"])
@given(value=value_texts)
@hypothesis_settings(max_examples=150, deadline=None)
def test_normalize_never_raises_on_a_verified_body(field: str, value: str) -> None:
    """Whatever the selector finds, normalize returns an envelope that serialises."""
    source = FUZZ_SETTINGS.sources[f"fuzz-{field.replace('_', '-')}"]
    body = ('{"event_type": "card.updated", "v": ' + value + "}").encode("utf-8", "surrogatepass")
    verified = VerifiedRequest(
        InboundRequest({"content-type": "application/json"}, body), scheme="jiko", key_id="K"
    )
    env = normalize(source, verified, received_at_us=RECEIVED, request_id="r1")
    assert isinstance(env, Envelope)
    record = EnvelopeSerializer()(env)
    assert EnvelopeDeserializer()(record) == env
    assert batch_bytes(env, record) <= record_limits(FUZZ_SETTINGS).overhead + len(body)


@pytest.mark.parametrize("value", ["1" + "0" * 400, "-1" + "0" * 400, "1e400", "NaN"])
def test_a_number_no_clock_means_falls_back_to_the_time_received(value: str) -> None:
    raw = ('{"event_type": "card.updated", "payload": {"updated_at": ' + value + "}}").encode()
    env = envelope_for("jiko", None, raw=raw)
    assert env.occurred_at == RECEIVED and env.occurred_at_origin == "RECEIVED"
    assert env.quarantine_reason is None


# --------------------------------------------------------------------------- the size bound


def batch_bytes(env: Envelope, value: bytes, stage_headers: int = STAGE_HEADERS) -> int:
    """The Kafka batch holding this envelope alone, with room for the stages' headers."""
    headers = [
        *ce_headers(env),
        ("x-quarantine-reason", (env.quarantine_reason or "").encode()),
        ("x-quarantine-stage", b"gateway"),
    ]
    header_bytes = sum(PER_HEADER + len(k) + len(v) for k, v in headers)
    key = env.event_id.encode()
    return BATCH_HEADER + RECORD_FIELDS + len(key) + len(value) + header_bytes + stage_headers


def test_the_largest_envelope_fits_the_computed_bound() -> None:
    """Every field at its longest, in the widest UTF-8 characters, still fits `record_limits`."""
    settings = FUZZ_SETTINGS
    limits = record_limits(settings)
    wide, high = "\U0001f600", "\u00ff"  # 4 UTF-8 bytes; a latin-1 header char is 2
    source = max(settings.sources.values(), key=lambda s: len(s.name))
    env = Envelope(
        event_id=wide * MAX_ID_LENGTH,
        event_id_origin="PAYLOAD",
        provider=source.provider,
        source=source.name,
        event_type=wide * MAX_TYPE_LENGTH,
        occurred_at=7_258_118_400_000_000,
        occurred_at_origin="PAYLOAD",
        received_at=7_258_118_400_000_000,
        ordering_key=wide * MAX_KEY_LENGTH,
        content_type=high * MAX_HEADER_VALUE,
        body=b"x" * limits.body_limit,
        headers={name: high * MAX_HEADER_VALUE for name in HEADER_ALLOW_LIST},
        verification=Verification(source.scheme, max(source.key_ids, key=len), "m" * 64),
        request_id="r" * 128,
        quarantine_reason="no event type at "
        + max(
            (s.selectors.type.text for s in settings.sources.values() if s.selectors.type),
            key=len,
        ),
    )
    value = EnvelopeSerializer()(env)
    assert batch_bytes(env, value) <= limits.batch
    assert limits.batch - batch_bytes(env, value) < 1024  # tight, not a guess
