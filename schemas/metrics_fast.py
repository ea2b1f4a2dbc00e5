"""Fast entry points of prometheus-client children, for per-request and per-delivery paths.

The gateway (per request) and the fan-out (per delivery) update a few pre-bound
children each time; ``Counter.inc`` and ``Histogram.observe`` re-check what those
paths settle once (label values bound, amount >= 0, exemplars) and find a
histogram's bucket with a loop over its bounds. These reach the same child's value
stores directly: same series, same stores (a process's mutexed float, or the
worker's mmap file in multiprocess mode). `tests/test_metrics_fast.py` holds them to
prometheus-client's own samples.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.values import MutexValue

# `loop_only=True`: the caller promises that only one thread (the event loop's) ever
# updates this child. Then a one-process store (MutexValue: a float behind a lock) is
# added to directly, without taking its lock: 0.04 instead of 0.27 us per update, eight
# updates per gateway request. A scrape from another thread still reads a whole float
# (the GIL makes the store's read and write atomic), at worst one update old. The
# workers' mmap stores (multiprocess mode) always go through their own inc().


def _unlocked(store: Any) -> Callable[[float], None]:
    def inc(amount: float) -> None:
        store._value += amount

    return inc


def adder(child: Counter | Gauge, *, loop_only: bool = False) -> Callable[[float], None]:
    """The labelled child's value store's own ``inc(amount)``: what ``Counter.inc`` ends in,
    without its per-call checks (and without the store's lock when `loop_only`)."""
    store: Any = child._value  # prometheus-client's value store of a labelled child
    if loop_only and type(store) is MutexValue:
        return _unlocked(store)
    inc: Callable[[float], None] = store.inc
    return inc


class Observer:
    """A labelled histogram child's ``observe(amount)``, as prometheus-client does it (the
    sum, then the first bucket whose bound holds the amount: buckets are stored apart
    and added up at collection), with a bisection instead of its loop over the bounds
    (and without the stores' locks when `loop_only`)."""

    __slots__ = ("_bounds", "_buckets", "_sum", "observe")

    def __init__(self, child: Histogram, *, loop_only: bool = False) -> None:
        internals: Any = child
        self._bounds: list[float] = list(internals._upper_bounds)  # ends with +Inf
        self._sum: Any = internals._sum  # value stores: the sum, then one per bucket
        self._buckets: list[Any] = list(internals._buckets)
        unlocked = all(type(s) is MutexValue for s in (self._sum, *self._buckets))
        self.observe: Callable[[float], None] = (
            self._observe_unlocked if loop_only and unlocked else self._observe
        )

    def _observe(self, amount: float) -> None:
        self._sum.inc(amount)
        self._buckets[bisect_left(self._bounds, amount)].inc(1)

    def _observe_unlocked(self, amount: float) -> None:  # see `loop_only` above
        self._sum._value += amount
        self._buckets[bisect_left(self._bounds, amount)]._value += 1
