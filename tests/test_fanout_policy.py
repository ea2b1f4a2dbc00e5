"""Pure delivery policy: routing globs, backoff with full jitter, Retry-After, budget, breaker."""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from consumers.fanout.policy import (
    Breaker,
    Budget,
    Route,
    RunnerOptions,
    Slots,
    backoff_s,
    retry_delay_s,
)
from consumers.fanout.tracker import OffsetTracker, PartitionTracker
from consumers.sinks.base import parse_retry_after
from schemas.config import RetrySettings, SinkSettings
from schemas.errors import ConfigError

RETRY = RetrySettings(max_attempts=5, initial_backoff_s=0.5, max_backoff_s=4.0, max_elapsed_s=10.0)


@pytest.mark.parametrize(
    ("providers", "types", "provider", "event_type", "wanted"),
    [
        (("*",), ("*",), "jiko", "payment.created", True),
        (("jiko",), ("*",), "fintoc", "payment.created", False),
        (("j*",), ("payment.*",), "jpmorgan", "payment.created", True),
        (("j*",), ("payment.*",), "jpmorgan", "refund.created", False),
        (("stripe", "github"), ("push", "pull_request*"), "github", "pull_request.opened", True),
        (("*",), ("invoice.[ab]*",), "stripe", "invoice.paid", False),
        (("*",), ("invoice.[ab]*",), "stripe", "invoice.allocated", True),
        (("Jiko",), ("*",), "jiko", "x", False),  # case-sensitive, like provider names
    ],
)
def test_route_globs(
    providers: tuple[str, ...], types: tuple[str, ...], provider: str, event_type: str, wanted: bool
) -> None:
    assert Route(providers, types).wants(provider, event_type) is wanted


@pytest.mark.parametrize(
    ("attempt", "cap"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0), (500, 4.0)]
)
def test_backoff_is_full_jitter_under_an_exponential_cap(attempt: int, cap: float) -> None:
    assert backoff_s(RETRY, attempt, rand=lambda: 0.999999) == pytest.approx(cap, rel=1e-5)
    assert backoff_s(RETRY, attempt, rand=lambda: 0.0) == 0.0
    assert backoff_s(RETRY, attempt, rand=lambda: 0.5) == pytest.approx(cap / 2)


def test_retry_after_is_a_floor_not_a_cap() -> None:
    assert retry_delay_s(RETRY, 1, 30.0, rand=lambda: 0.5) == 30.0
    assert retry_delay_s(RETRY, 4, 0.1, rand=lambda: 0.5) == 2.0
    assert retry_delay_s(RETRY, 2, None, rand=lambda: 1.0) == 1.0


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),  # in the past: at once
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_budget_counts_attempts_and_elapsed_time() -> None:
    clock = [100.0]
    budget = Budget(RETRY, clock=lambda: clock[0])
    budget.attempts = 4
    assert budget.allows_another(1.0)
    budget.attempts = 5
    assert not budget.allows_another(0.0)  # max_attempts reached
    budget.attempts = 1
    clock[0] = 108.0
    assert budget.allows_another(2.0)
    assert not budget.allows_another(2.1)  # would start after max_elapsed_s


def test_breaker_opens_after_n_failures_and_probes_after_cooldown() -> None:
    async def scenario() -> list[bool]:
        now = [0.0]
        changes: list[bool] = []
        breaker = Breaker(3, 5.0, on_change=changes.append, clock=lambda: now[0])

        def is_open() -> bool:
            return breaker.is_open

        for _ in range(2):
            assert await breaker.acquire() is False
            breaker.record(False, probe=False)
        assert not is_open()
        breaker.record(True, probe=False)  # a success resets the count
        for _ in range(3):
            breaker.record(False, probe=False)
        assert is_open() and changes == [True]
        waiter = asyncio.create_task(breaker.acquire())
        await asyncio.sleep(0.05)
        assert not waiter.done(), "open: attempts wait for the cool-down"
        now[0] = 5.0
        breaker.abandon_probe()  # wake the waiter (the clock is fake)
        assert await asyncio.wait_for(waiter, 1) is True  # the one half-open probe
        second = asyncio.create_task(breaker.acquire())
        await asyncio.sleep(0.05)
        assert not second.done(), "only one probe at a time"
        breaker.record(False, probe=True)  # probe failed: open again
        now[0] = 9.0
        await asyncio.sleep(0.05)
        assert not second.done()
        now[0] = 10.0
        breaker.abandon_probe()
        assert await asyncio.wait_for(second, 1) is True
        breaker.record(True, probe=True)
        assert not is_open()
        assert await breaker.acquire() is False
        return changes

    assert asyncio.run(scenario()) == [True, False]


def test_slots_bound_attempts_first_come_first_served() -> None:
    async def scenario() -> list[int]:
        slots = Slots(2)
        running: list[int] = []
        most = [0]
        order: list[int] = []
        gate = asyncio.Event()

        async def attempt(i: int) -> None:
            await slots.acquire()
            try:
                order.append(i)
                running.append(i)
                most[0] = max(most[0], len(running))
                await gate.wait()
                await asyncio.sleep(0)
                running.remove(i)
            finally:
                slots.release()

        tasks = [asyncio.create_task(attempt(i)) for i in range(8)]
        await asyncio.sleep(0.01)
        assert order == [0, 1] and slots.free == 0, "two slots: two attempts, six wait"
        gate.set()
        await asyncio.gather(*tasks)
        assert most[0] == 2 and slots.free == 2
        return order

    assert asyncio.run(scenario()) == list(range(8)), "waiters get slots in arrival order"


def test_slots_survive_cancelled_waiters_and_cancelled_holders() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        await slots.acquire()  # held by us
        cancelled = asyncio.create_task(slots.acquire())
        handed = asyncio.create_task(slots.acquire())
        third = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0.01)
        cancelled.cancel()  # gives up while waiting: must not take or lose a slot
        await asyncio.sleep(0.01)
        slots.release()  # skips the cancelled waiter, hands the slot to `handed`...
        handed.cancel()  # ...which is cancelled before it runs: it passes the slot on
        with pytest.raises(asyncio.CancelledError):
            await handed
        await asyncio.wait_for(third, 1)  # the slot reached the next waiter
        assert cancelled.cancelled() and slots.free == 0
        slots.release()
        assert slots.free == 1
        await asyncio.wait_for(slots.acquire(), 1)  # and is free again, not lost or doubled
        assert slots.free == 0

    asyncio.run(scenario())


def test_commit_prefix_tracks_out_of_order_completion() -> None:
    t = PartitionTracker()
    for offset in (10, 11, 12, 13):
        t.read(offset)
    assert t.committable() == 10  # nothing finished: the start position
    t.finish(12)
    t.finish(11)
    assert t.committable() == 10, "10 still in flight"
    t.finish(10)
    assert t.committable() == 13
    t.committed(13)
    assert t.committable() is None
    t.finish(13)
    assert t.committable() == 14
    assert t.in_flight == 0
    with pytest.raises(ValueError, match="out of order"):
        t.read(13)


def test_offset_tracker_forgets_revoked_partitions() -> None:
    tracker = OffsetTracker()
    tracker.assign("t", 0)
    tracker.assign("t", 1)
    assert tracker.read("t", 0, 5) and tracker.read("t", 1, 7)
    tracker.finish("t", 0, 5)
    tracker.revoke("t", 1)
    tracker.finish("t", 1, 7)  # a late finish of a revoked partition is ignored
    assert not tracker.read("t", 1, 8)
    assert tracker.committable() == {("t", 0): 6}
    tracker.committed({("t", 0): 6})
    assert tracker.committable() == {}


def sink(**options: object) -> SinkSettings:
    return SinkSettings("s", "log", ("*",), ("*",), RetrySettings(), options)


def test_runner_options_defaults_and_errors() -> None:
    assert RunnerOptions.from_settings(sink()) == RunnerOptions()
    assert RunnerOptions.from_settings(sink(concurrency=8)).concurrency == 8
    with pytest.raises(ConfigError, match=r"sinks\.s\.concurrency: must be an integer >= 1"):
        RunnerOptions.from_settings(sink(concurrency=0))
    with pytest.raises(ConfigError, match=r"sinks\.s\.breaker_cooldown_s"):
        RunnerOptions.from_settings(sink(breaker_cooldown_s="soon"))


class _FakeConsumer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def assignment(self) -> list[str]:
        return ["tp"]

    def pause(self, _tps: object) -> None:
        self.calls.append("pause")

    def resume(self, _tps: object) -> None:
        self.calls.append("resume")


def test_flow_control_stops_reading_at_the_bound_and_pauses_only_after_a_stall() -> None:
    from prometheus_client import CollectorRegistry

    from consumers.fanout.metrics import FanoutMetrics
    from consumers.fanout.runner import PAUSE_AFTER_S, SinkRunner
    from consumers.sinks import SinkContext, build_sink
    from tests.receiver_support import make_settings

    settings = make_settings("127.0.0.1:1", "flow", {"l": {"type": "log", "max_in_flight": 10}})
    sink = build_sink(settings.sinks["l"], SinkContext(settings, {}))
    runner = SinkRunner(settings, settings.sinks["l"], sink, FanoutMetrics(CollectorRegistry()))
    consumer = runner._consumer = _FakeConsumer()
    runner.tracker.assign("t", 0)
    tracker = runner.tracker.partitions[("t", 0)]

    assert runner._flow_control(now=0.0) == 10  # never more than the room left
    for offset in range(10):
        tracker.read(offset)
    assert runner._flow_control(now=1.0) == 0  # full: stop reading, no pause yet
    assert runner._flow_control(now=1.0 + PAUSE_AFTER_S / 2) == 0
    assert consumer.calls == []
    tracker.finish(0)
    assert runner._flow_control(now=2.0) == 1  # room again: read, still no pause
    tracker.read(10)
    assert runner._flow_control(now=3.0) == 0
    assert runner._flow_control(now=3.0 + PAUSE_AFTER_S) == 1  # a stall: pause, keep polling
    assert consumer.calls == ["pause"]
    for offset in range(1, 5):
        tracker.finish(offset)
    assert tracker.in_flight == 6
    assert runner._flow_control(now=5.0) == 4  # paused: consume serves callbacks, within room
    assert consumer.calls == ["pause"]  # above half the bound: stay paused
    tracker.finish(5)
    assert runner._flow_control(now=6.0) == 5
    assert consumer.calls == ["pause", "resume"]


def test_route_by_source_glob() -> None:
    route = Route(("stripe",), ("*",), ("stripe-eu", "stripe-test-*"))
    assert route.wants("stripe", "invoice.paid", "stripe-eu")
    assert route.wants("stripe", "invoice.paid", "stripe-test-1")
    assert not route.wants("stripe", "invoice.paid", "stripe-us")
    assert Route().wants("stripe", "invoice.paid", "anything")  # sources default to "*"


class _Record:
    """A consumed record as `SinkRunner._accept` reads it."""

    def __init__(self, offset: int, value: bytes, headers: list[tuple[str, bytes | None]]) -> None:
        self._offset, self._value, self._headers = offset, value, headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "flow.acme.ordered"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self._headers


def test_accept_routes_on_headers_and_reads_late_as_header_value_does() -> None:
    """The runner reads ce_type, ce_source and late in one pass: the last of repeated
    headers counts, routing needs no decode, and `late` is `is_late` of the headers."""
    from prometheus_client import CollectorRegistry

    from consumers.fanout.metrics import FanoutMetrics
    from consumers.fanout.runner import SinkRunner
    from consumers.sinks import SinkContext, build_sink
    from schemas.records import LATE, ce_headers, is_late
    from schemas.serde import EnvelopeSerializer
    from tests.receiver_support import envelope, make_settings

    settings = make_settings(
        "127.0.0.1:1", "flow", {"l": {"type": "log", "event_types": ["thing.*"]}}
    )
    sink = build_sink(settings.sinks["l"], SinkContext(settings, {}))
    runner = SinkRunner(settings, settings.sinks["l"], sink, FanoutMetrics(CollectorRegistry()))
    assert "flow.acme.ordered" in runner.topics
    runner.tracker.assign("flow.acme.ordered", 0)
    env = envelope("e1", "k", event_type="thing.updated")
    value = EnvelopeSerializer()(env)
    ce: list[tuple[str, bytes | None]] = list(ce_headers(env))
    cases: list[tuple[list[tuple[str, bytes | None]], bool, bool]] = [
        (ce, True, False),
        ([*ce, (LATE, b"1")], True, True),
        ([*ce, (LATE, b"true"), (LATE, b"0")], True, False),  # the last one counts
        ([*ce, (LATE, None)], True, False),
        ([*ce, ("ce_type", b"other.thing")], False, False),  # routed out, never decoded
        ([("ce_type", b"other.thing"), *ce], True, False),
        ([h for h in ce if h[0] != "ce_source"], True, False),  # routed on the envelope
    ]

    async def accept_all() -> None:
        for offset, (headers, kept, late) in enumerate(cases):
            runner._accept(_Record(offset, value if offset != 4 else b"junk", headers))
            lane = runner.lanes.pop(("flow.acme.ordered", 0, b"k"), None)
            task = runner.lane_tasks.pop(("flow.acme.ordered", 0, b"k"), None)
            if task is not None:
                task.cancel()
            assert (lane is not None) == kept, headers
            if lane is not None:
                event = lane[0].event
                assert event is not None and event.envelope == env
                assert event.late is late is is_late(headers), headers

    asyncio.run(accept_all())
