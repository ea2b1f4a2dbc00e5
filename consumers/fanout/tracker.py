"""Which offsets may be committed, when records of one partition finish out of order.

Records of different ordering keys complete in any order; the committed offset of
a partition may only move past a record once it and every earlier record are
finished (delivered or dead-lettered). `OffsetTracker` keeps, per partition, the
offsets read in order and the finished ones, and yields the contiguous prefix.
"""

from __future__ import annotations

from collections import deque


class PartitionTracker:
    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # read, in offset order
        self._finished: set[int] = set()
        self._next: int | None = None  # offset to commit: one past the finished prefix
        self._committed: int | None = None
        self._last: int | None = None

    def read(self, offset: int) -> None:
        if self._last is not None and offset <= self._last:
            raise ValueError(f"offset {offset} read out of order")
        self._last = offset
        if not self._pending and self._next is None:
            self._next = offset
        self._pending.append(offset)

    def finish(self, offset: int) -> None:
        self._finished.add(offset)
        while self._pending and self._pending[0] in self._finished:
            done = self._pending.popleft()
            self._finished.discard(done)
            self._next = done + 1

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def committable(self) -> int | None:
        """The next offset to commit if it moved since the last `committed()`, else None."""
        if self._next is None or self._next == self._committed:
            return None
        return self._next

    def committed(self, offset: int) -> None:
        self._committed = offset


class OffsetTracker:
    """Trackers for the partitions currently assigned, keyed by (topic, partition)."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[str, int], PartitionTracker] = {}

    def assign(self, topic: str, partition: int) -> None:
        self.partitions[(topic, partition)] = PartitionTracker()

    def revoke(self, topic: str, partition: int) -> None:
        self.partitions.pop((topic, partition), None)

    def read(self, topic: str, partition: int, offset: int) -> bool:
        tracker = self.partitions.get((topic, partition))
        if tracker is None:
            return False
        tracker.read(offset)
        return True

    def finish(self, topic: str, partition: int, offset: int) -> None:
        tracker = self.partitions.get((topic, partition))
        if tracker is not None:  # revoked meanwhile: the new owner redelivers it
            tracker.finish(offset)

    def committable(self) -> dict[tuple[str, int], int]:
        out = {}
        for tp, tracker in self.partitions.items():
            offset = tracker.committable()
            if offset is not None:
                out[tp] = offset
        return out

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        for tp, offset in offsets.items():
            tracker = self.partitions.get(tp)
            if tracker is not None:
                tracker.committed(offset)

    @property
    def in_flight(self) -> int:
        return sum(t.in_flight for t in self.partitions.values())
