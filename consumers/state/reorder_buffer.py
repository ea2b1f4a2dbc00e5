"""Per-partition reorder buffer: pure logic with an injected clock (no Kafka, no I/O).

Release rule, for one input partition:

- Buffered events form a heap ordered by ``(occurred_at, arrival seq)``.
- An event is due at ``arrival + window`` (window of its source). When one is due,
  it is released together with everything ordered before it, in heap order, so
  the output stays sorted.
- Only with ``early_release`` (off by default) may an event go before its
  deadline: once the partition's highest occurred_at seen, minus the event's
  window, is at or past it (an event-time watermark, as in stream processors
  with bounded out-of-orderness). That lowers latency under dense traffic but
  marks late any event that arrives more than a window behind the newest one,
  even when the wall-clock window would still have sorted it (a provider
  replaying a backlog fast and out of order), so ordering wins by default.
- A late event (occurred_at earlier than the last released occurred_at) is
  released at once, marked late, with its lateness; never dropped.

Times: ``occurred_us`` is event time in microseconds; ``arrival`` and ``now`` are
wall-clock seconds (wall, not monotonic, because buffered events survive a
restart through the changelog with their arrival time).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Entry(Generic[T]):
    occurred_us: int
    seq: int
    arrival: float
    window_s: float
    item: T
    released: bool = False

    @property
    def deadline(self) -> float:
        return self.arrival + self.window_s


@dataclass(frozen=True, slots=True)
class Release(Generic[T]):
    item: T
    occurred_us: int
    late: bool
    lateness_s: float  # 0.0 unless late


@dataclass
class ReorderBuffer(Generic[T]):
    """One input partition's buffer."""

    early_release: bool = False  # also release by event-time watermark (see module doc)
    last_released_us: int | None = None
    max_seen_us: int | None = None
    _heap: list[tuple[int, int, Entry[T]]] = field(default_factory=list)
    _deadlines: list[tuple[float, int, Entry[T]]] = field(default_factory=list)
    _seq: int = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, occurred_us: int, window_s: float, arrival: float, item: T) -> list[Release[T]]:
        """Buffer one event; returns it at once if it is late. Call `due` after."""
        if self.last_released_us is not None and occurred_us < self.last_released_us:
            lateness = (self.last_released_us - occurred_us) / 1e6
            return [Release(item, occurred_us, True, lateness)]
        self._seq += 1
        entry = Entry(occurred_us, self._seq, arrival, window_s, item)
        heapq.heappush(self._heap, (occurred_us, entry.seq, entry))
        heapq.heappush(self._deadlines, (entry.deadline, entry.seq, entry))
        if self.max_seen_us is None or occurred_us > self.max_seen_us:
            self.max_seen_us = occurred_us
        return []

    def due(self, now: float) -> list[Release[T]]:
        """Everything that must (deadline) or may (watermark, if enabled) go now, in order."""
        out: list[Release[T]] = []
        deadlines = self._deadlines
        while deadlines:
            deadline, _, target = deadlines[0]
            if target.released:
                heapq.heappop(deadlines)
                continue
            if deadline > now:
                break
            # Release the due event and everything that sorts before it.
            while not target.released:
                self._pop(out)
        while self.early_release and self._heap:
            head = self._heap[0][2]
            assert self.max_seen_us is not None
            if head.occurred_us > self.max_seen_us - int(head.window_s * 1e6):
                break
            self._pop(out)
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline of a still-buffered event (when `due` next has work)."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].released:
            heapq.heappop(deadlines)
        return deadlines[0][0] if deadlines else None

    def drain(self) -> list[Release[T]]:
        """Release everything (used by tests and on demand; not on shutdown)."""
        out: list[Release[T]] = []
        while self._heap:
            self._pop(out)
        return out

    def oldest_arrival(self) -> float | None:
        """Arrival time of the longest-waiting event (O(n): for a gauge, not per event)."""
        return min((entry.arrival for _, _, entry in self._heap), default=None)

    def _pop(self, out: list[Release[T]]) -> None:
        occurred_us, _, entry = heapq.heappop(self._heap)
        entry.released = True
        if self.last_released_us is None or occurred_us > self.last_released_us:
            self.last_released_us = occurred_us
        out.append(Release(entry.item, occurred_us, False, 0.0))
