"""The sink contract: one class per destination type, two methods (`deliver`, `close`).

A sink gets one routed, decoded `Event` at a time and answers with a
`DeliveryResult`. It never retries, sleeps or dead-letters by itself: the
fan-out runner owns the retry budget, the circuit breaker, per-key order, the
DLQ and the offsets, so a new sink type is only the code that talks to its
destination (see docs/fanout.md, "Adding a sink").
"""

from __future__ import annotations

import email.utils
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from schemas.config import Settings, SinkSettings
from schemas.envelope import Envelope
from schemas.errors import BridgeError
from schemas.options import Options
from schemas.records import KafkaHeaders

# Options every sink accepts; the runner reads them, the sink class never sees them.
COMMON_OPTIONS: tuple[str, ...] = (
    "concurrency",  # deliveries at once across ordering keys
    "max_in_flight",  # records read but not finished; beyond it, fetching pauses
    "breaker_failures",  # consecutive retryable failures that open the breaker
    "breaker_cooldown_s",  # how long it stays open before one probe
)


class SinkError(BridgeError):
    """A sink cannot go on at all (not one failed delivery: that is a DeliveryResult)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One `.ordered` record as a sink sees it: the envelope plus where it came from."""

    envelope: Envelope
    value: bytes  # the envelope bytes exactly as read
    key: bytes | None
    headers: KafkaHeaders
    topic: str
    partition: int
    offset: int
    late: bool = False

    @property
    def event_id(self) -> str:
        return self.envelope.event_id


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """`ok`; `retry` (transient: 408/429/5xx/network, maybe with Retry-After); `reject`."""

    outcome: str
    status: int | None = None
    retry_after_s: float | None = None
    reason: str = ""

    @classmethod
    def ok(cls, status: int | None = None) -> DeliveryResult:
        if cls is DeliveryResult:  # immutable: one per status (2xx or None), made once
            found = _OK.get(status)
            if found is None:
                found = _OK[status] = cls("ok", status)
            return found
        return cls("ok", status)

    @classmethod
    def retry(
        cls, reason: str, status: int | None = None, retry_after_s: float | None = None
    ) -> DeliveryResult:
        return cls("retry", status, retry_after_s, reason)

    @classmethod
    def reject(cls, reason: str, status: int | None = None) -> DeliveryResult:
        return cls("reject", status, None, reason)


_OK: dict[int | None, DeliveryResult] = {}


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need from the process: the whole settings and the environment."""

    settings: Settings
    env: Mapping[str, str] = field(default_factory=dict)


class Sink(ABC):
    """Base class of every sink type. Subclasses list their own `OPTIONS`."""

    OPTIONS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: SinkSettings, context: SinkContext) -> None:
        self.name = settings.name
        self.settings = settings
        self.options = self.options_for(settings)
        self.validate(settings, context.env)

    @classmethod
    def options_for(cls, settings: SinkSettings) -> Options:
        """The sink's options table, checked for unknown keys (common ones are allowed)."""
        return Options(settings.options, f"sinks.{settings.name}", COMMON_OPTIONS + cls.OPTIONS)

    @classmethod
    def validate(cls, settings: SinkSettings, env: Mapping[str, str]) -> None:
        """Check `options` without touching the network; raise ConfigError naming the key."""
        cls.options_for(settings)

    @abstractmethod
    async def deliver(self, event: Event) -> DeliveryResult:
        """Deliver one event; classify the outcome; never raise for a delivery failure."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once, after the last delivery."""

    # Transactional sinks (kafka) commit the consumer's offsets themselves, atomically
    # with what they produced; the runner then calls this instead of Consumer.commit.
    commits_offsets: ClassVar[bool] = False

    def commit_offsets(self, offsets: list[Any], group_metadata: Any) -> None:
        """Commit `offsets` (TopicPartitions) with everything delivered since the last call."""
        raise NotImplementedError


def int_option(opts: Options, name: str, default: int, minimum: int = 1) -> int:
    """An integer option >= `minimum` (Options.number is for seconds)."""
    value = opts._raw(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise opts.fail(name, f"must be an integer >= {minimum}")
    return value


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from `now`: delta-seconds or an HTTP date; None if absent/bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # HTTP dates are GMT; a zone-less date is not one
    return max(0.0, when.timestamp() - now)
