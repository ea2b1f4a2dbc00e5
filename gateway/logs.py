"""Structured logs: `key=value` (or JSON) lines with provider / source / event id / request id.

Never pass a body, a secret, a signature or a raw header to these functions.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_LOGGER = logging.getLogger("webhook_bridge")


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info and record.exc_info[0] is not None:
            fields["error"] = record.exc_info[0].__name__
        if self.as_json:
            return json.dumps(fields, default=str, separators=(",", ":"))
        return " ".join(f"{k}={_kv(v)}" for k, v in fields.items())


def _kv(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


def setup(level: str = "info", fmt: str = "kv", process: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt == "json"))
    root = logging.getLogger("webhook_bridge")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    _CONTEXT["process"] = process


_CONTEXT: dict[str, str] = {"process": ""}


def log(level: int, msg: str, **fields: Any) -> None:
    if _LOGGER.isEnabledFor(level):
        if _CONTEXT["process"]:
            fields = {"process": _CONTEXT["process"], **fields}
        _LOGGER.log(level, msg, extra={"fields": fields})


def info(msg: str, **fields: Any) -> None:
    log(logging.INFO, msg, **fields)


def warning(msg: str, **fields: Any) -> None:
    log(logging.WARNING, msg, **fields)


def error(msg: str, **fields: Any) -> None:
    log(logging.ERROR, msg, **fields)


def debug(msg: str, **fields: Any) -> None:
    log(logging.DEBUG, msg, **fields)
