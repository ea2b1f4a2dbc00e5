"""The pure parts of delivery policy: routing globs, backoff, Retry-After, circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from consumers.sinks.base import COMMON_OPTIONS, int_option
from consumers.sinks.registry import sink_class
from schemas.config import RetrySettings, SinkSettings
from schemas.options import Options


@dataclass(frozen=True)
class Route:
    """Which events a sink takes: provider, source and event type globs (fnmatch,
    case-sensitive). A provider may have several sources (e.g. two Stripe accounts)."""

    providers: tuple[str, ...] = ("*",)
    event_types: tuple[str, ...] = ("*",)
    sources: tuple[str, ...] = ("*",)

    @classmethod
    def of(cls, settings: SinkSettings) -> Route:
        return cls(settings.providers, settings.event_types, settings.sources)

    def wants_provider(self, provider: str) -> bool:
        return any(fnmatch.fnmatchcase(provider, p) for p in self.providers)

    def wants(self, provider: str, event_type: str, source: str = "") -> bool:
        return (
            self.wants_provider(provider)
            and any(fnmatch.fnmatchcase(event_type, p) for p in self.event_types)
            and (
                self.sources == ("*",) or any(fnmatch.fnmatchcase(source, p) for p in self.sources)
            )
        )


@dataclass(frozen=True)
class RunnerOptions:
    """The options of `[sinks.<name>]` that every sink type accepts (read by the runner)."""

    concurrency: int = 64
    max_in_flight: int = 2000
    breaker_failures: int = 10
    breaker_cooldown_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: SinkSettings) -> RunnerOptions:
        table = {k: v for k, v in settings.options.items() if k in COMMON_OPTIONS}
        opts = Options(table, f"sinks.{settings.name}", COMMON_OPTIONS)
        return cls(
            concurrency=int_option(opts, "concurrency", cls.concurrency),
            max_in_flight=int_option(opts, "max_in_flight", cls.max_in_flight),
            breaker_failures=int_option(opts, "breaker_failures", cls.breaker_failures),
            breaker_cooldown_s=opts.number("breaker_cooldown_s", cls.breaker_cooldown_s),
        )


def backoff_s(
    retry: RetrySettings,
    attempt: int,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with full jitter after failed attempt number `attempt` (1-based)."""
    cap = min(retry.max_backoff_s, retry.initial_backoff_s * 2.0 ** min(attempt - 1, 60))
    return cap * rand()


def retry_delay_s(
    retry: RetrySettings,
    attempt: int,
    retry_after_s: float | None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Wait before the next attempt: the jittered backoff, but never less than Retry-After."""
    delay = backoff_s(retry, attempt, rand)
    return delay if retry_after_s is None else max(delay, retry_after_s)


class Budget:
    """The retry budget of one event: attempts and elapsed time since the first attempt."""

    def __init__(self, retry: RetrySettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry = retry
        self.clock = clock
        self.started = clock()
        self.attempts = 0

    def allows_another(self, delay_s: float) -> bool:
        """After a failure: is there an attempt left that starts within max_elapsed_s?"""
        if self.attempts >= self.retry.max_attempts:
            return False
        return self.clock() + delay_s - self.started <= self.retry.max_elapsed_s


class Slots:
    """`concurrency` attempts at once, first come first served: an `asyncio.Semaphore`
    that hands a released slot straight to the longest waiter.

    asyncio's (3.11) walks its waiters on each release and again on each acquire,
    and waiting lanes are the usual case while a backlog drains (hundreds of lanes,
    64 slots): ~6 us per contended acquire against ~2 here (docs/benchmarks.md).
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return self._free

    async def acquire(self) -> None:
        if self._free:  # free slots mean nobody waits: a release hands over before freeing
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # cancelled waiters are skipped here
                waiter.set_result(None)
                return
        self._free += 1


class Breaker:
    """Per-sink circuit breaker: closed -> open after N consecutive failures -> half-open.

    While open, every attempt waits for the cool-down; then exactly one probe
    goes through (half-open). Success closes it; failure opens it again.
    Rejections (4xx) count as successes here: the destination answered.
    """

    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        on_change: Callable[[bool], None] = lambda is_open: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.on_change = on_change
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self._probing = False
        self._changed = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    async def acquire(self) -> bool:
        """Wait until an attempt may start. Returns True if this attempt is the probe."""
        while self.opened_at is not None:
            wait = self.opened_at + self.cooldown_s - self.clock()
            if wait <= 0 and not self._probing:
                self._probing = True
                return True
            self._changed.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)
            else:
                await self._changed.wait()
        return False

    def abandon_probe(self) -> None:
        """The probe was cancelled before it had a result: let another attempt probe."""
        self._probing = False
        self._changed.set()

    def record(self, success: bool, probe: bool) -> None:
        if probe:
            self._probing = False
        if success:
            self.consecutive = 0
            if self.opened_at is not None:
                self.opened_at = None
                self.on_change(False)
        else:
            self.consecutive += 1
            if probe or (self.opened_at is None and self.consecutive >= self.failures):
                was_open = self.opened_at is not None
                self.opened_at = self.clock()
                if not was_open:
                    self.on_change(True)
        self._changed.set()


def validate_sink(settings: SinkSettings, env: Mapping[str, str]) -> None:
    """Start-up check of one sink: the runner's options, then the sink type's own."""
    RunnerOptions.from_settings(settings)
    sink_class(settings).validate(settings, env)
