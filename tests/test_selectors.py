from __future__ import annotations

from typing import Any

import pytest

from gateway.verify.base import InboundRequest, VerifiedRequest
from schemas.errors import ConfigError
from schemas.selectors import parse_selector

VERIFIED = VerifiedRequest(
    request=InboundRequest({"x-github-delivery": "d-1"}, b""),
    scheme="test",
    event_id="sig-id",
    signed_timestamp=1700000000.0,
    event_type="sig-type",
)
DOC: dict[str, Any] = {
    "event.type": "payout",
    "data": {"id": "p1", "items": [{"id": "i0"}]},
    "event": {"type": "nested"},
    "empty": "",
    "n": 0,
    "resource": '{"id": "r1", "items": [{"id": "ri0"}], "inner": "{\\"id\\": \\"deep\\"}"}',
    "text": "not json",
    "broken": '{"id": ',
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data.id", ("p1", "payload")),
        ('["event.type"]', ("payout", "payload")),
        ("event.type", ("nested", "payload")),
        ("data.items[0].id", ("i0", "payload")),
        ("body:data.id", ("p1", "payload")),
        ("header:X-GitHub-Delivery", ("d-1", "header")),
        ("signed:id", ("sig-id", "header")),
        ("signed:timestamp", (1700000000.0, "header")),
        ("missing | empty | data.id", ("p1", "payload")),
        ("n", (0, "payload")),
        ("resource", (DOC["resource"], "payload")),  # a path that ends at it: the string
        ("resource.id", ("r1", "payload")),
        ("resource.items[0].id", ("ri0", "payload")),
        ("resource.inner.id", ("deep", "payload")),
        ("missing.id | resource.id", ("r1", "payload")),
    ],
)
def test_selects(text: str, expected: tuple[Any, str]) -> None:
    assert parse_selector(text, "k").select(DOC, VERIFIED) == expected


@pytest.mark.parametrize(
    "text",
    [
        "missing",
        "data",
        "data.items[5].id",
        "empty",
        "data.id.x",
        "text.id",
        "broken.id",
        "resource.nope",
    ],
)
def test_absent_or_unusable_is_none(text: str) -> None:
    assert parse_selector(text, "k").select(DOC, VERIFIED) is None


def test_non_object_body_is_none() -> None:
    assert parse_selector("data.id", "k").select([1, 2], VERIFIED) is None
    assert parse_selector("data.id", "k").select(None, VERIFIED) is None


@pytest.mark.parametrize("text", ["", "  ", "signed:nope", "header:", "a..b[", "a[x]"])
def test_bad_selector_names_key(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_selector(text, "sources.x.select.id")
    assert info.value.key == "sources.x.select.id"
