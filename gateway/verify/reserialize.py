"""A JSON body parsed and written back the way Just Wallet's sample receivers do it.

Its documentation's samples sign the *re-serialised* body, not the bytes received:

- Node/Express: ``JSON.stringify(req.body)``: every number a double, integer-like keys
  first, non-ASCII kept, ``-0`` written ``0``, a zero fraction dropped;
- PHP/Laravel: ``json_encode($request->all())`` over ``json_decode($body, true)``:
  objects become associative arrays, so ``{}`` is written ``[]`` and keys ``"0".."n-1"``
  in order make a list; integers beyond 64 bits become doubles; a zero fraction is
  dropped (``serialize_precision = -1``); ``/`` becomes ``\\/`` and non-ASCII ``\\uXXXX``;
- Ruby: ``JSON.generate(JSON.parse(body))``: floats keep their fraction (``20.0``,
  ``1.0e+16``), integers are exact, non-ASCII and ``/`` are kept as they are.

Each writer raises `ValueError` where its runtime fails (nesting too deep, a number it
cannot write). `parse` is stricter than the runtimes on purpose: it refuses a body that
is not UTF-8, not a JSON object or array, or holds a number out of double range, where a
sample would sign a placeholder (``null``, ``[]`` or an empty string) instead.
``tests/vectors/justwallet.json`` holds what the real runtimes print for each case.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = ["WRITERS", "node_stringify", "parse", "php_json_encode", "ruby_generate"]

# Containers nested deeper than this fail in the runtime (PHP json_decode's default
# depth 512 admits 511 levels; Ruby's JSON max_nesting is 100). Node has no such limit;
# 511 bounds the recursion here.
NODE_MAX_DEPTH = 511
PHP_MAX_DEPTH = 511
RUBY_MAX_DEPTH = 100
_INT64 = 2**63
_UINT32_MAX_INDEX = 2**32 - 2  # the largest array index of a JS object key


def parse(body: bytes) -> Any:
    """The body as the samples see it, or ValueError (see the module docstring)."""
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    document = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    if not isinstance(document, dict | list):
        raise ValueError("not a JSON object or array")  # noqa: TRY004 (callers catch ValueError)
    return document


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of double range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of abs(value) and the decimal point position ``n``:
    abs(value) = 0.DIGITS x 10**n (what dtoa mode 0 returns as ``decpt``)."""
    if value == 0:
        return "0", 1
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exponent, int)
    return digits, len(digit_tuple) + exponent


# --------------------------------------------------------------------------- Node


def _js_number(value: float) -> str:
    """ECMAScript Number::toString."""
    if value == 0:
        return "0"  # -0 too
    digits, n = _digits(value)
    sign = "-" if value < 0 else ""
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    exponent = n - 1
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def _js_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF:  # control, lone surrogate
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _is_array_index(key: str) -> bool:
    return (
        key.isascii() and key.isdigit() and str(int(key)) == key and (int(key) <= _UINT32_MAX_INDEX)
    )


def _js_members(obj: dict[str, Any]) -> tuple[list[tuple[str, Any]], bool]:
    indices = sorted((k for k in obj if _is_array_index(k)), key=int)
    names = [k for k in obj if not _is_array_index(k)]
    return [(k, obj[k]) for k in (*indices, *names)], False


def _js_value(value: int | float) -> str:
    return _js_number(_double(value))


def node_stringify(document: Any) -> bytes:
    """``JSON.stringify(JSON.parse(body))``."""
    return _write(document, _js_string, _js_value, _js_members, NODE_MAX_DEPTH).encode("utf-8")


# --------------------------------------------------------------------------- PHP


def _php_double(value: float) -> str:
    """php_gcvt(value, 17, '.', 'e') with zend_dtoa mode 0 (serialize_precision = -1)."""
    digits, n = _digits(value)
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if (n < -3) if n < 0 else (n > 17):
        exponent = n - 1
        mantissa = digits[0] + "." + (digits[1:] or "0")
        return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"
    if n < 0:
        return sign + "0." + "0" * -n + digits
    whole = digits[:n].ljust(n, "0")
    fraction = digits[n:]
    if not fraction:
        return sign + whole
    return sign + (whole or "0") + "." + fraction


def _php_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char == "/":
            out.append("\\/")
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError("unpaired UTF-16 surrogate")  # json_decode refuses it
        elif code < 0x20 or 0x7F < code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _php_members(obj: dict[str, Any]) -> tuple[list[tuple[str, Any]], bool]:
    # An associative array whose keys are 0..n-1 in order is a list (so is {}).
    as_list = all(key == str(i) for i, key in enumerate(obj))
    return list(obj.items()), as_list


def _php_number(value: int | float) -> str:
    if isinstance(value, int) and -_INT64 <= value < _INT64:
        return str(value)
    return _php_double(_double(value))  # json_decode turns a bigger integer into a double


def php_json_encode(document: Any) -> bytes:
    """``json_encode(json_decode(body, true))``, PHP 8 defaults."""
    text = _write(document, _php_string, _php_number, _php_members, PHP_MAX_DEPTH)
    return text.encode("ascii")


# --------------------------------------------------------------------------- Ruby


def _ruby_float(value: float) -> str:
    """Float#to_s."""
    digits, n = _digits(value)
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    # Fixed notation up to 15 integer digits, or 16 when a fraction follows.
    if 0 < n <= 15 or (n == 16 and len(digits) > n):
        whole = digits[:n].ljust(n, "0")
        return f"{sign}{whole}.{digits[n:] or '0'}"
    if -4 < n <= 0:
        return sign + "0." + "0" * -n + digits
    exponent = n - 1
    mantissa = digits[0] + "." + (digits[1:] or "0")
    return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"


def _ruby_string(text: str) -> str:
    out = ['"']
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _ruby_members(obj: dict[str, Any]) -> tuple[list[tuple[str, Any]], bool]:
    return list(obj.items()), False


def _ruby_number(value: int | float) -> str:
    return str(value) if isinstance(value, int) else _ruby_float(value)


def ruby_generate(document: Any) -> bytes:
    """``JSON.generate(JSON.parse(body))`` (json 2.x defaults)."""
    text = _write(document, _ruby_string, _ruby_number, _ruby_members, RUBY_MAX_DEPTH)
    return text.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)


# --------------------------------------------------------------------------- shared

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_LITERALS: dict[bool | None, str] = {True: "true", False: "false", None: "null"}


def _double(value: int | float) -> float:
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise ValueError("number out of double range")
    return result


Members = Callable[[dict[str, Any]], tuple[list[tuple[str, Any]], bool]]


def _write(
    document: Any,
    string: Callable[[str], str],
    number: Callable[[int | float], str],
    members: Members,
    max_depth: int,
) -> str:
    """Compact JSON text of `document`, without recursion (bodies may nest deeply).

    `members` gives an object's (key, value) pairs in output order, and whether the
    runtime writes the object as a list."""
    out: list[str] = []
    work: list[str | tuple[Any, int]] = [(document, 1)]  # output tokens or (value, depth)
    while work:
        item = work.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        value, depth = item
        if isinstance(value, dict | list):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth}")
            if isinstance(value, dict):
                pairs, as_list = members(value)
            else:
                pairs, as_list = [("", v) for v in value], True
            parts: list[str | tuple[Any, int]] = ["[" if as_list else "{"]
            for i, (key, member) in enumerate(pairs):
                if i:
                    parts.append(",")
                if not as_list:
                    parts.append(string(key) + ":")
                parts.append((member, depth + 1))
            parts.append("]" if as_list else "}")
            work.extend(reversed(parts))
        elif isinstance(value, str):
            out.append(string(value))
        elif isinstance(value, bool) or value is None:
            out.append(_LITERALS[value])
        else:
            out.append(number(value))
    return "".join(out)


WRITERS: dict[str, Callable[[Any], bytes]] = {
    "node": node_stringify,
    "php": php_json_encode,
    "ruby": ruby_generate,
}
