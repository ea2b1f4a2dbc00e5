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


def adder(child: Counter | Gauge) -> Callable[[float], None]:
    """The labelled child's value store's own ``inc(amount)``: what ``Counter.inc`` ends in,
    without its per-call checks."""
    value: Any = child._value  # prometheus-client's store
    inc: Callable[[float], None] = value.inc
    return inc


class Observer:
    """A labelled histogram child's ``observe(amount)``, as prometheus-client does it (the
    sum, then the first bucket whose bound holds the amount: buckets are stored apart
    and added up at collection), with a bisection instead of its loop over the bounds."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        internals: Any = child
        self._bounds: list[float] = list(internals._upper_bounds)  # ends with +Inf
        self._buckets: list[Callable[[float], None]] = [b.inc for b in internals._buckets]
        self._sum: Callable[[float], None] = internals._sum.inc

    def observe(self, amount: float) -> None:
        self._sum(amount)
        self._buckets[bisect_left(self._bounds, amount)](1)
