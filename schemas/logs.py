"""Structured logs: `key=value` (or JSON) lines with provider / source / event id / request id.

Never pass a body, a secret, a signature or a raw header to these functions.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

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


def debug_enabled() -> bool:
    """Whether debug lines are written: a hot path asks before it gathers a line's fields."""
    return _LOGGER.isEnabledFor(logging.DEBUG)


# --------------------------------------------------------------------------- librdkafka

# Parts of a librdkafka message that change between repeats of the same trouble:
# "(after 0ms in state CONNECT)", "(after 1ms in state UP, 3 identical error(s) suppressed)",
# "1/1 brokers are down" then "0/2 brokers are down".
_VOLATILE = re.compile(r"\s*\(after \d+ms.*$|\d+ms\b|\b\d+/\d+\b")


def _kind(text: str) -> str:
    return _VOLATILE.sub("", text)


K = TypeVar("K", bound=Hashable)


class Throttle(Generic[K]):
    """Admits the first of each kind of message, then counts repeats for `interval_s`.

    `admit(key)` answers None (suppressed) or how many repeats were suppressed since the
    key was last admitted. `expired()` hands over the counts of keys whose interval ran
    out with repeats suppressed, and starts a new interval for each: a steady stream of
    one kind is reported once per interval (by whoever calls `expired`), and a burst that
    stopped is still reported once. Thread-safe.
    """

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[K, tuple[float, int]] = {}  # key -> (admitted at, suppressed)

    def admit(self, key: K) -> int | None:
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.interval_s:
                self._seen[key] = (entry[0], entry[1] + 1)
                return None
            self._seen[key] = (now, 0)
            return entry[1] if entry is not None else 0

    def expired(self) -> list[tuple[K, int]]:
        now = self._clock()
        out: list[tuple[K, int]] = []
        with self._lock:
            for key, (admitted, suppressed) in list(self._seen.items()):
                if now - admitted < self.interval_s:
                    continue
                if suppressed:
                    out.append((key, suppressed))
                    self._seen[key] = (now, 0)  # this report opens the next interval
                else:
                    del self._seen[key]
        return out


class KafkaClientLog:
    """`logger` and `error_cb` for a librdkafka client: one line per kind of message per
    interval, the next one saying how many were suppressed (`repeated=N`).

    A broker outage makes librdkafka report the same refused connection many times a
    second, from every client; unthrottled, that buries every other line. Pass
    ``**client_log.config()`` into the client's settings, and call `flush()` now and then
    (any periodic task) so the count of a burst that stopped is logged too. Every client the
    project creates should use one (``client`` names it: producer, consumer, ...).
    """

    def __init__(
        self,
        client: str,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[Any], None] | None = None,
    ) -> None:
        self.client = client
        self.throttle: Throttle[tuple[int, str, str, str]] = Throttle(interval_s, clock)
        self.on_error = on_error  # sees every error_cb error, throttled or not

    def config(self) -> dict[str, Any]:
        return {"logger": self, "error_cb": self.error}

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """What confluent-kafka calls: ``log(level, "%s [%s] %s", facility, name, message)``."""
        facility, message = (str(args[0]), str(args[2])) if len(args) == 3 else ("", fmt % args)
        self._emit(level, "librdkafka", facility, message)

    def error(self, err: Any) -> None:
        """The client's `error_cb`: fatal errors at error level, the rest at warning."""
        if self.on_error is not None:
            self.on_error(err)
        level = logging.ERROR if err.fatal() else logging.WARNING
        self._emit(level, "kafka client error", str(err.name()), str(err.str()))

    def flush(self) -> None:
        for key, suppressed in self.throttle.expired():
            level, msg, code, kind = key
            log(level, msg, client=self.client, code=code, detail=kind, repeated=suppressed)

    def _emit(self, level: int, msg: str, code: str, text: str) -> None:
        if not _LOGGER.isEnabledFor(level):
            return
        repeated = self.throttle.admit((level, msg, code, _kind(text)))
        if repeated is None:
            return
        fields: dict[str, Any] = {"client": self.client, "code": code, "detail": text}
        if repeated:
            fields["repeated"] = repeated
        log(level, msg, **fields)


_CLIENT_LOGS: weakref.WeakSet[KafkaClientLog] = weakref.WeakSet()


def kafka_client_config(client: str) -> dict[str, Any]:
    """``logger`` and ``error_cb`` for one more librdkafka client of this process, through a
    `KafkaClientLog` (throttled); `flush_client_logs` reports what each one suppressed."""
    client_log = KafkaClientLog(client)
    _CLIENT_LOGS.add(client_log)
    return client_log.config()


def flush_client_logs() -> None:
    """Log the count of every burst that stopped (call it now and then)."""
    for client_log in list(_CLIENT_LOGS):
        client_log.flush()
