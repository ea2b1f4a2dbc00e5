"""The record contract: what the writers put in headers, the readers get back."""

from __future__ import annotations

from schemas.records import (
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_TOPIC,
    LATE_HEADER,
    ORIGIN_OFFSET,
    ce_headers,
    ce_source,
    dlq_headers,
    header_value,
    is_late,
    quarantine_headers,
    source_of,
    without_dlq,
)
from tests.receiver_support import envelope


def test_ce_source_names_the_source_and_reads_back() -> None:
    env = envelope("e1", "K")
    assert header_value(ce_headers(env), "ce_source") == ce_source(env.source)
    assert source_of(ce_source("jiko-eu")) == "jiko-eu"
    assert source_of(b"jiko") == "jiko"  # a bare name, as older records may carry


def test_late_is_one_header_with_two_spellings_read() -> None:
    assert is_late([LATE_HEADER])
    assert is_late([("late", b"true")])
    assert not is_late([("late", b"0")]) and not is_late(None)


def test_quarantine_headers_name_reason_stage_and_origin() -> None:
    headers = quarantine_headers("undecodable", "compactor", ("webhooks.jiko", 2, 41))
    assert header_value(headers, "x-quarantine-reason") == b"undecodable"
    assert header_value(headers, "x-quarantine-stage") == b"compactor"
    assert header_value(headers, ORIGIN_OFFSET) == b"41"
    assert len(quarantine_headers("not_json", "gateway")) == 2  # the gateway has no origin


def test_dlq_headers_round_trip_and_strip() -> None:
    original = [("ce_id", b"e1"), ("late", b"1")]
    headers = original + dlq_headers(
        reason="rejected",
        last_status=410,
        attempts=3,
        sink="hook",
        detail="x" * 500,
        origin=("webhooks.jiko.ordered", 1, 7),
    )
    assert header_value(headers, DLQ_TOPIC) == b"webhooks.jiko.ordered"
    assert (header_value(headers, DLQ_PARTITION), header_value(headers, DLQ_OFFSET)) == (b"1", b"7")
    assert len(header_value(headers, "x-dlq-detail") or b"") == 200
    assert without_dlq(headers) == original
