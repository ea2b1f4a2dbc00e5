"""Selectors: where a source finds its event id, type, time and ordering key.

A selector is one or more alternatives separated by ``|``; the first that yields a
non-empty value wins::

    data.id                      a path into the JSON body (``body:`` is implied)
    ["event.type"]               a key that itself contains a dot (Just Wallet)
    data.items[0].id             a list index
    resource.id                  a path continues into a string holding a JSON document
                                 (J.P. Morgan sends its "resource" as such a string)
    header:X-GitHub-Delivery     a request header (case-insensitive)
    signed:id | signed:timestamp | signed:type
                                 what the verifier extracted from signed headers
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.errors import ConfigError


class _Headers(Protocol):
    def get(self, name: str) -> str | None: ...


class _Request(Protocol):
    @property
    def headers(self) -> _Headers: ...


class Verified(Protocol):
    """What a selector reads of a verified request (the gateway's ``VerifiedRequest``)."""

    @property
    def request(self) -> _Request: ...
    @property
    def event_id(self) -> str | None: ...
    @property
    def signed_timestamp(self) -> float | None: ...
    @property
    def event_type(self) -> str | None: ...


_SEGMENT = re.compile(r'\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]|([^.\[\]]+)')
SIGNED_FIELDS = ("id", "timestamp", "type")


@dataclass(frozen=True, slots=True)
class Alternative:
    kind: str  # "body" | "header" | "signed"
    path: tuple[str | int, ...] = ()
    name: str = ""


@dataclass(frozen=True, slots=True)
class Selector:
    text: str
    alternatives: tuple[Alternative, ...]

    def select(self, body: Any, verified: Verified) -> tuple[Any, str] | None:
        """Return (value, origin) with origin in payload|header|signed, or None."""
        for alt in self.alternatives:
            value: Any
            if alt.kind == "body":
                value = _walk(body, alt.path)
                origin = "payload"
            elif alt.kind == "header":
                value = verified.request.headers.get(alt.name)
                origin = "header"
            else:
                value = {
                    "id": verified.event_id,
                    "timestamp": verified.signed_timestamp,
                    "type": verified.event_type,
                }[alt.name]
                origin = "header"
            if value is not None and value != "" and not isinstance(value, dict | list):
                return value, origin
        return None


def _walk(node: Any, path: tuple[str | int, ...]) -> Any:
    # Parsed JSON is exactly dict, list, str, numbers, bool and None: `type(x) is` tests
    # are exact here and cost a fraction of isinstance against an ABC (a hot path: every
    # alternative of every selector, per request).
    for part in path:
        kind = type(node)
        if kind is str:
            node = _embedded(node)
            kind = type(node)
        if kind is dict:
            if type(part) is int:  # an index into an object: no such path
                return None
            node = node.get(part)
            if node is None:
                return None
        elif kind is list:
            if type(part) is not int or part >= len(node):
                return None
            node = node[part]
        else:
            return None
    return node


def _embedded(text: str) -> Any:
    """The JSON object or array a string holds, else None (a path cannot go on)."""
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def parse_selector(text: str, key: str) -> Selector:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(key, "a selector must be a non-empty string")
    alternatives = tuple(_parse_alternative(part.strip(), key) for part in text.split("|"))
    return Selector(text=text, alternatives=alternatives)


def _parse_alternative(text: str, key: str) -> Alternative:
    if text.startswith("header:"):
        name = text[len("header:") :].strip().lower()
        if not name:
            raise ConfigError(key, "header: needs a header name")
        return Alternative(kind="header", name=name)
    if text.startswith("signed:"):
        name = text[len("signed:") :].strip()
        if name not in SIGNED_FIELDS:
            raise ConfigError(
                key, f"signed:{name} is unknown; valid: signed:id, signed:timestamp, signed:type"
            )
        return Alternative(kind="signed", name=name)
    if text.startswith("body:"):
        text = text[len("body:") :].strip()
    path: list[str | int] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "." and path:
            pos += 1
        match = _SEGMENT.match(text, pos)
        if match is None:
            raise ConfigError(key, f"cannot parse selector path {text!r} at character {pos}")
        quoted, index, plain = match.groups()
        if quoted is not None:
            path.append(quoted.replace('\\"', '"'))
        elif index is not None:
            path.append(int(index))
        else:
            path.append(plain)
        pos = match.end()
    if not path:
        raise ConfigError(key, "empty selector path")
    return Alternative(kind="body", path=tuple(path))
