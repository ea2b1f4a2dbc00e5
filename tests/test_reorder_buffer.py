"""The reorder buffer's release rule, driven by hypothesis with an injected clock."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.state.reorder_buffer import Release, ReorderBuffer
from consumers.state.reorder_codec import (
    BufferedRecord,
    decode,
    decode_watermark,
    encode,
    encode_watermark,
    offset_of,
    record_key,
)


@dataclass(frozen=True)
class Ev:
    n: int
    occurred_us: int
    arrival: float
    window_s: float


steps = st.lists(
    st.tuples(
        st.integers(0, 40),  # occurred_at, tenths of a second
        st.sampled_from([0.0, 0.5, 1.0, 2.0]),  # window of the event's source
        st.floats(0.0, 3.0, allow_nan=False),  # clock advance before it arrives
        st.booleans(),  # whether a bare tick (no arrival) happens after
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.booleans())
def test_every_event_once_sorted_except_late_and_never_past_its_bound(
    plan: list[tuple[int, float, float, bool]], early_release: bool
) -> None:
    buf: ReorderBuffer[Ev] = ReorderBuffer(early_release)
    now = 1000.0
    released: list[tuple[Release[Ev], float]] = []
    pending: dict[int, Ev] = {}

    def check_bound() -> None:
        for ev in pending.values():
            assert ev.arrival + ev.window_s > now, f"{ev} waited past its bound at {now}"

    for n, (tenths, window, advance, tick) in enumerate(plan):
        now += advance
        ev = Ev(n, tenths * 100_000, now, window)
        pending[n] = ev
        before = buf.last_released_us
        out = buf.add(ev.occurred_us, window, now, ev)
        out += buf.due(now)
        if before is not None and ev.occurred_us < before:
            assert out and out[0].item is ev and out[0].late
            assert out[0].lateness_s == (before - ev.occurred_us) / 1e6
        for r in out:
            released.append((r, now))
            del pending[r.item.n]
        check_bound()
        if tick:
            now += 0.25
            for r in buf.due(now):
                released.append((r, now))
                del pending[r.item.n]
            check_bound()
    now += 10.0
    for r in buf.due(now):
        released.append((r, now))
        del pending[r.item.n]
    assert not pending and len(buf) == 0
    assert sorted(r.item.n for r, _ in released) == list(range(len(plan)))
    on_time = [r.occurred_us for r, _ in released if not r.late]
    assert on_time == sorted(on_time)
    # A late event really was older than something released before it.
    high = None
    for r, _ in released:
        if r.late:
            assert high is not None and r.occurred_us < high
        else:
            high = r.occurred_us if high is None else max(high, r.occurred_us)


def test_ties_go_in_arrival_order_and_window_releases_a_quiet_partition() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer()
    assert buf.add(5, 1.0, 100.0, "a") == []
    assert buf.add(5, 1.0, 100.1, "b") == []
    assert buf.add(3, 1.0, 100.2, "c") == []
    assert buf.due(100.99) == []
    # "a" is due; "c" sorts before it and goes first; "b" waits for its own deadline.
    assert [r.item for r in buf.due(101.0)] == ["c", "a"]
    assert [r.item for r in buf.due(101.2)] == ["b"]
    assert buf.oldest_arrival() is None


def test_event_time_watermark_releases_early_only_when_enabled() -> None:
    for early_release, expected in ((True, ["old"]), (False, [])):
        buf: ReorderBuffer[str] = ReorderBuffer(early_release)
        buf.add(1_000_000, 1.0, 0.0, "old")
        assert buf.due(0.1) == []
        buf.add(2_500_000, 1.0, 0.2, "new")  # max seen - window = 1.5 s >= 1.0 s
        assert [r.item for r in buf.due(0.2)] == expected


def test_a_fast_out_of_order_backlog_comes_out_sorted_by_default() -> None:
    # A provider replays 20 s of events within 0.3 s, newest first: the wall-clock
    # window holds them all, so none is late and all leave sorted at the deadline.
    times_s = [20, 15, 10, 5, 0]
    for early_release in (False, True):
        buf: ReorderBuffer[int] = ReorderBuffer(early_release)
        out = []
        for i, t in enumerate(times_s):
            out += buf.add(t * 1_000_000, 5.0, 100.0 + i * 0.075, t)
            out += buf.due(100.0 + i * 0.075)
        out += buf.due(106.0)
        late = [r.item for r in out if r.late]
        if early_release:
            assert late  # the watermark released 0..10 before the older ones came
        else:
            assert late == [] and [r.item for r in out] == [0, 5, 10, 15, 20]


def test_codec_round_trip() -> None:
    record = BufferedRecord(42, b"key", b"\xc3\x01value", [("ce_id", b"e1"), ("x", None)])
    stored = decode(42, encode(12.5, 1_700_000_000_000_001, 2.0, record))
    assert stored.record == record
    assert (stored.arrival, stored.occurred_us, stored.window_s) == (
        12.5,
        1_700_000_000_000_001,
        2.0,
    )
    assert offset_of(record_key(42)) == 42
    assert offset_of(b"\x00watermark") is None
    assert decode_watermark(encode_watermark(-5)) == -5


def test_next_deadline_is_the_earliest_unreleased_deadline() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer()
    assert buf.next_deadline() is None
    buf.add(200, 1.0, 10.0, "b")  # due at 11.0
    buf.add(100, 0.5, 10.2, "a")  # due at 10.7
    assert buf.next_deadline() == 10.7
    assert [r.item for r in buf.due(10.7)] == ["a"]
    assert buf.next_deadline() == 11.0
    assert [r.item for r in buf.due(11.0)] == ["b"]
    assert buf.next_deadline() is None
