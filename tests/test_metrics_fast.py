"""The fast entry points (`schemas/metrics_fast.py`) record what prometheus-client would."""

from __future__ import annotations

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
    for fast in (False, True):
        registry = CollectorRegistry()
        counter = Counter("c", "c", ["source"], registry=registry).labels("a")
        histogram = Histogram("h", "h", ["source"], buckets=buckets, registry=registry)
        child = histogram.labels("a")
        if fast:
            inc, observe = adder(counter), Observer(child).observe
        else:
            inc, observe = counter.inc, child.observe
        for amount in amounts:
            inc(1)
            observe(amount)
        text = generate_latest(registry).decode()
        exposed.append([line for line in text.splitlines() if "_created" not in line])
    plain, fast_text = exposed
    assert f'c_total{{source="a"}} {float(len(amounts))}' in plain
    assert fast_text == plain


def test_the_gateway_uses_these() -> None:
    import gateway.metrics

    assert gateway.metrics.adder is adder and gateway.metrics.Observer is Observer
