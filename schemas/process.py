"""What every webhook-bridge process does the same way.

- `broker_reachable_gauge`: the one definition of ``webhook_bridge_broker_reachable``;
- `die_with_parent`: a child (broker, registry, gateway worker) that its supervisor's
  death takes with it, so that a killed test run or `make run` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

BROKER_REACHABLE = "webhook_bridge_broker_reachable"
_PR_SET_PDEATHSIG = 1


def broker_reachable_gauge(
    registry: CollectorRegistry, process: str, reachable: Callable[[], bool] | None = None
) -> Gauge:
    """`webhook_bridge_broker_reachable{process}`, the one definition every process uses: 1
    while the process's Kafka client reaches a broker, else 0 (and 0 until it first did).
    With `reachable`, read at each scrape (the gateway); else set by the process's watch."""
    gauge = Gauge(
        BROKER_REACHABLE,
        "1 while this process reaches a Kafka broker (background metadata probe), else 0",
        ["process"],
        registry=registry,
        multiprocess_mode="livemin",  # gateway workers: 0 when any of them lost the broker
    )
    gauge.labels(process).set(0)
    if reachable is not None:
        gauge.labels(process).set_function(lambda: float(reachable()))
    return gauge


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    # A test run or `make run` that is killed must not leave a broker behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
