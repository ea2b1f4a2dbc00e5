"""The fast entry points (`schemas/metrics_fast.py`) record what prometheus-client would."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from consumers.fanout import metrics as fanout_metrics
from gateway.metrics import latency_buckets
from schemas.metrics_fast import Observer, adder

BUCKETS = {
    "gateway latency": latency_buckets([2.5, 1.0]),
    "fan-out attempt": fanout_metrics._DURATION_BUCKETS,
    "fan-out event age": fanout_metrics._AGE_BUCKETS,
}


@pytest.mark.parametrize("buckets", list(BUCKETS.values()), ids=list(BUCKETS))
def test_the_hot_paths_fast_entry_points_record_what_prometheus_client_would(
    buckets: tuple[float, ...],
) -> None:
    """`adder` and `Observer` (what a request or a delivery calls) against Counter.inc /
    Histogram.observe on twin metrics: the same samples, amounts on bucket bounds and
    beyond the last one."""
    amounts = [0.0, 0.001, 0.0011, 0.025, 0.8, 2.5, 2.5000001, 5.0, 7.0, 1e9, 0.0004]
    amounts += [b for b in buckets] + [b * 1.000001 for b in buckets]
    exposed = []
    for way in ("prometheus-client", "fast", "fast, loop only"):
        registry = CollectorRegistry()
        counter = Counter("c", "c", ["source"], registry=registry).labels("a")
        histogram = Histogram("h", "h", ["source"], buckets=buckets, registry=registry)
        child = histogram.labels("a")
        inc: Callable[[float], None]
        observe: Callable[[float], None]
        if way == "prometheus-client":
            inc, observe = counter.inc, child.observe
        else:
            loop_only = way == "fast, loop only"
            inc = adder(counter, loop_only=loop_only)
            observe = Observer(child, loop_only=loop_only).observe
        for amount in amounts:
            inc(1)
            observe(amount)
        text = generate_latest(registry).decode()
        exposed.append([line for line in text.splitlines() if "_created" not in line])
    plain, fast_text, unlocked_text = exposed
    assert f'c_total{{source="a"}} {float(len(amounts))}' in plain
    assert fast_text == plain
    assert unlocked_text == plain


def test_loop_only_skips_the_lock_of_a_one_process_store_only() -> None:
    """`loop_only` adds to a one-process store without its lock (each lock is swapped for
    one that fails when taken); a store of another kind keeps its own inc()."""

    class Untouchable:
        def __enter__(self) -> None:
            raise AssertionError("the store's lock was taken")

        def __exit__(self, *_exc: object) -> None:
            return None

    registry = CollectorRegistry()
    counter = Counter("c", "c", ["source"], registry=registry).labels("a")
    child = Histogram("h", "h", ["source"], buckets=(1.0,), registry=registry).labels("a")
    inc, observe = adder(counter, loop_only=True), Observer(child, loop_only=True).observe
    stores = [counter._value, child._sum, *child._buckets]
    locks = [store._lock for store in stores]
    for store in stores:
        store._lock = Untouchable()
    inc(2)
    observe(0.5)
    with pytest.raises(AssertionError, match="lock was taken"):  # the swap does bite
        adder(counter)(1)
    for store, lock in zip(stores, locks, strict=True):
        store._lock = lock
    assert counter._value.get() == 2
    assert child._sum.get() == 0.5
    assert child._buckets[0].get() == 1

    class OtherStore:
        def __init__(self) -> None:
            self.added = 0.0

        def inc(self, amount: float) -> None:
            self.added += amount

    other = Counter("d", "d", ["source"], registry=registry).labels("a")
    other._value = OtherStore()
    adder(other, loop_only=True)(3)
    assert other._value.added == 3


def test_the_gateway_uses_these() -> None:
    import gateway.metrics

    assert gateway.metrics.adder is adder and gateway.metrics.Observer is Observer
