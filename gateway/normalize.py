"""From a verified request to an envelope: event id, type, occurrence time, ordering key.

The body is parsed only after verification. A verified body that cannot be used
(not UTF-8, not JSON, no event type) still becomes an envelope, with
``quarantine_reason`` set: it is stored in the quarantine topic and acknowledged,
because a provider's retry would carry the same bytes.

When a configured selector finds no usable value, the field falls back: the event id to
the body hash, occurred_at to the time received, the ordering key to the event id (its
own lane: never one shared by all such events), and a missing type quarantines the
event. Each fallback is reported to `on_fallback` with its field from `FIELDS`, so a
provider's payload drift shows in a metric. A field without a selector (Jiko's id, J.P.
Morgan's time) takes its default by design and is not a fallback.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.verify.base import VerifiedRequest
from schemas.config import SourceSettings
from schemas.envelope import (
    HEADER_ALLOW_LIST,
    MAX_HEADER_VALUE,
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_TYPE_LENGTH,
    Envelope,
    Verification,
)
from schemas.selectors import Selector

FIELDS = ("id", "type", "occurred_at", "ordering_key")  # the fields selectors fill
_MIN_US = 0
_MAX_US = 7_258_118_400_000_000  # 2200-01-01
_FRACTION = re.compile(r"(\.\d{1,6})\d*")
_LONG_FRACTION = re.compile(r"\.\d{7}")  # what _FRACTION cuts: more than 6 digits
_INTEGER = re.compile(r"[+-]?[0-9]+")


def normalize(
    source: SourceSettings,
    verified: VerifiedRequest,
    *,
    received_at_us: int,
    request_id: str,
    on_fallback: Callable[[str], object] | None = None,
) -> Envelope:
    headers = verified.request.headers
    body = verified.request.body
    content_type = headers.get("content-type", "")[:MAX_HEADER_VALUE]
    kept = {k: v[:MAX_HEADER_VALUE] for k, v in headers.items() if k in HEADER_ALLOW_LIST}
    verification = Verification(verified.scheme, verified.key_id, verified.mode)
    document, problem, strict = _parse(body)
    sel = source.selectors

    event_id, id_origin = _event_id(sel.id, document, verified, body, strict)
    event_type = _text(sel.type, document, verified, MAX_TYPE_LENGTH) if problem is None else None
    if problem is None and event_type is None:
        problem = "no event type at " + (sel.type.text if sel.type else "(no type selector)")
    occurred_at, time_origin = _occurred_at(sel.occurred_at, document, verified, received_at_us)
    ordering_key = _text(sel.ordering_key, document, verified, MAX_KEY_LENGTH)
    if on_fallback is not None:
        fell_back = (
            ("id", sel.id, id_origin == "BODY_HASH"),
            ("type", sel.type, event_type is None),
            ("occurred_at", sel.occurred_at, time_origin == "RECEIVED"),
            ("ordering_key", sel.ordering_key, ordering_key is None),
        )
        for field, selector, missed in fell_back:
            if selector is not None and missed:
                on_fallback(field)
    if ordering_key is None:
        ordering_key = event_id if sel.ordering_key is not None else source.provider
    return Envelope(
        event_id=event_id,
        event_id_origin=id_origin,
        provider=source.provider,
        source=source.name,
        event_type=event_type or "",
        occurred_at=occurred_at,
        occurred_at_origin=time_origin,
        received_at=received_at_us,
        ordering_key=ordering_key,
        content_type=content_type,
        body=body,
        headers=kept,
        verification=verification,
        request_id=request_id,
        quarantine_reason=problem,
    )


def _parse(body: bytes) -> tuple[Any, str | None, bool]:
    """(document, problem, strict). orjson first; the standard library takes what orjson
    refuses but JSON allows (integers beyond 64 bits, NaN), and says which error it was."""
    try:
        return orjson.loads(body), None, True
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "body is not valid UTF-8", False
    try:
        return json.loads(text), None, False
    except (ValueError, RecursionError):
        return None, "body is not valid JSON", False


def body_hash(document: Any, body: bytes, strict: bool = True) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, UTF-8), else of the raw bytes."""
    if document is not None:
        try:
            if strict:
                canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
            else:
                canonical = json.dumps(
                    document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
                ).encode("utf-8")
            return "sha256:" + hashlib.sha256(canonical).hexdigest()
        except (TypeError, ValueError, RecursionError):
            pass
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _event_id(
    selector: Selector | None, document: Any, verified: VerifiedRequest, body: bytes, strict: bool
) -> tuple[str, str]:
    if selector is not None:
        found = selector.select(document, verified)
        text = None if found is None else _usable_text(found[0], MAX_ID_LENGTH)
        if found is not None and text is not None:
            return text, "PAYLOAD" if found[1] == "payload" else "HEADER"
    return body_hash(document, body, strict), "BODY_HASH"


def _text(
    selector: Selector | None, document: Any, verified: VerifiedRequest, limit: int
) -> str | None:
    if selector is None:
        return None
    found = selector.select(document, verified)
    return None if found is None else _usable_text(found[0], limit)


def _usable_text(value: Any, limit: int) -> str | None:
    """A string or a number as text, if it is non-empty, printable and at most `limit`
    characters; else None. Bools, NaN and infinities are no identifiers."""
    if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, int) and abs(value) >= 10**limit:  # too long, and str() may refuse
        return None
    if not isinstance(value, str | int | float):
        return None
    text = str(value)
    return text if 0 < len(text) <= limit and text.isprintable() else None


def _occurred_at(
    selector: Selector | None, document: Any, verified: VerifiedRequest, received_at_us: int
) -> tuple[int, str]:
    if selector is not None:
        found = selector.select(document, verified)
        if found is not None:
            micros = parse_time(found[0])
            if micros is not None:
                return micros, "PAYLOAD" if found[1] == "payload" else "HEADER"
    return received_at_us, "RECEIVED"


def parse_time(value: Any) -> int | None:
    """ISO 8601 text or a Unix time in s / ms / us / ns (by magnitude) -> microseconds.

    Anything else (bools, NaN, infinities, numbers no clock could mean, dates outside
    1970-2200) is None: the caller falls back to the time received. Never raises."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _parse_time_text(value.strip())
    if isinstance(value, int):
        if abs(value) > _MAX_NUMERIC_TIME:  # beyond nanoseconds of 2200: no clock's reading
            return None
        return _in_range(_int_micros(value))
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > _MAX_NUMERIC_TIME:
            return None
        return _in_range(int(value * _scale(abs(value))))
    return None


_MAX_NUMERIC_TIME = 10**19  # nanoseconds until 2286; anything larger is not a time


def _scale(magnitude: float) -> float:
    """Seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude."""
    if magnitude > 1e17:
        return 1e-3
    if magnitude > 1e14:
        return 1
    return 1e3 if magnitude > 1e11 else 1e6


def _int_micros(value: int) -> int:
    # integer arithmetic: a float would round nanosecond timestamps
    magnitude = abs(value)
    if magnitude > 10**17:
        return value // 1000
    if magnitude > 10**14:
        return value
    return value * 1000 if magnitude > 10**11 else value * 1_000_000


def _parse_time_text(text: str) -> int | None:
    # "YYYY-MM-..." is no number (a number has at most one "-" past its sign): straight to
    # the date parser, without the failed int and float attempts of every ISO time.
    if not (text[4:5] == "-" and text[7:8] == "-"):
        if _INTEGER.fullmatch(text):  # integer arithmetic keeps nanosecond precision
            return parse_time(int(text)) if len(text) <= 21 else None
        try:
            return parse_time(float(text))
        except ValueError:
            pass
    if _LONG_FRACTION.search(text):  # only then does the cut change anything
        text = _FRACTION.sub(r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        micros = int(parsed.timestamp()) * 1_000_000 + parsed.microsecond
    except (ValueError, OverflowError):  # also years the platform cannot convert
        return None
    return _in_range(micros)


def _in_range(micros: int) -> int | None:
    return micros if _MIN_US <= micros <= _MAX_US else None
