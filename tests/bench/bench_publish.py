"""The publish side alone: `gateway.publisher.Publisher` under a gateway-like load (not a test).

    python -m tests.bench.bench_publish [--seconds 5] [--rounds 3] [--work-us 120]
        [--variant NAME=KEY:VALUE,KEY:VALUE ...]

One process pinned to core 0 (its librdkafka threads with it, as in the gateway
benchmark), the broker on core 1. ``--concurrency`` coroutines on one uvloop each
publish envelope-sized values with the gateway's seven ``ce_*`` headers and wait for
the acknowledgement, spending ``--work-us`` of CPU before each publish (what the
rest of a request costs), so the loop is as busy as a gateway's and batches are as
large. Each variant overrides producer settings (``--variant linger5=linger.ms:5``;
``poll:thread`` polls from a thread instead of the loop's timer);
the variants run back to back in every round. Prints publishes/s, p50/p99 of the
publish, and CPU per publish by thread (python: the loop; rdk:*: librdkafka's).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import re
import statistics
import threading
import time
from typing import Any

import uvloop

from deploy.topics import ensure_topics
from gateway.publisher import Publisher
from schemas.topics import TopicSpec
from tests.bench.common import BenchBroker, add_broker_argument, machine, thread_seconds

HEADERS = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"sha256:" + b"0" * 64),
    ("ce_source", b"webhook-bridge/jiko"),
    ("ce_type", b"card.transaction.approved"),
    ("ce_time", b"2026-11-30T10:00:00.000000Z"),
    ("ce_subject", b"jiko"),
    ("content-type", b"application/avro"),
]


class ThreadPolledPublisher(Publisher):
    """The alternative to the loop's poll timer (variant ``poll=thread``): a thread blocks
    in ``poll()`` (without the GIL while it waits), its delivery reports only collect the
    finished futures, and one ``call_soon_threadsafe`` per batch resolves them on the loop."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reports: collections.deque[tuple[Any, Any, Any]] = collections.deque()
        self._running = True
        super().start(loop)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._poller = threading.Thread(target=self._poll_forever, daemon=True)
        self._poller.start()

    def close(self, timeout_s: float = 10.0) -> int:
        self._running = False
        self._poller.join()
        return super().close(timeout_s)

    def _poll_forever(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    def _schedule(self, delay: float) -> None:  # no loop timer: the thread polls
        return None

    def _produce_outbox(self) -> None:
        timer, self._timer = self._timer, None
        super()._produce_outbox()
        self._timer = timer

    def _reporter(self, future: Any, pending: Any) -> Any:
        resolve = super()._reporter(future, pending)
        reports, loop = self._reports, self._loop
        assert loop is not None

        def on_delivery(err: Any, msg: Any) -> None:  # on the poll thread
            reports.append((resolve, err, msg))
            if len(reports) == 1:
                loop.call_soon_threadsafe(self._resolve_reports)

        return on_delivery

    def _resolve_reports(self) -> None:
        reports = self._reports
        while reports:  # what the thread appends meanwhile is resolved here too
            resolve, err, msg = reports.popleft()
            resolve(err, msg)


def thread_cpu() -> dict[tuple[str, str], float]:
    """CPU seconds by (thread name, thread id): a closed producer's threads may linger
    until it is collected, under the same names as the next one's."""
    return {(re.sub(r"\d+$", "N", name), tid): s for (name, tid), s in thread_seconds().items()}


def spin(us: float) -> None:
    """Burn `us` of this thread's CPU (thread time: a preemption does not count)."""
    end = time.thread_time() + us / 1e6
    while time.thread_time() < end:
        pass


def run_variant(
    config: dict[str, Any], topic: str, seconds: float, concurrency: int, work_us: float
) -> dict[str, Any]:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    poll = config.pop("poll", "loop")
    publisher = (ThreadPolledPublisher if poll == "thread" else Publisher)(config, [topic])
    publisher.start(loop)
    publisher.check_broker(5.0)
    value = os.urandom(1100)
    latencies: list[float] = []
    counter = 0

    async def worker(stop: float) -> None:
        nonlocal counter
        while time.monotonic() < stop:
            spin(work_us)
            counter += 1
            key = b"%d" % counter
            started = time.perf_counter()
            await publisher.publish(topic, key, value, HEADERS, 10.0)
            latencies.append(time.perf_counter() - started)

    async def go(seconds: float) -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(worker(stop) for _ in range(concurrency)))

    loop.run_until_complete(go(1.0))  # warm-up: connections, metadata
    latencies.clear()
    before, wall = thread_cpu(), time.monotonic()
    loop.run_until_complete(go(seconds))
    wall = time.monotonic() - wall
    after = thread_cpu()
    publisher.close(5)
    loop.close()
    done = len(latencies)
    threads: dict[str, float] = {}
    for (name, tid), used in after.items():
        spent = (used - before.get((name, tid), 0.0)) / done * 1e6
        threads[name] = threads.get(name, 0.0) + spent
    latencies.sort()
    return {
        "rate": done / wall,
        "p50_ms": latencies[done // 2] * 1e3,
        "p99_ms": latencies[int(done * 0.99)] * 1e3,
        "cpu_us": sum(threads.values()),
        "threads": {n: t for n, t in threads.items() if t >= 0.5},
    }


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    name, _, settings = text.partition("=")
    config: dict[str, Any] = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition(":")
        config[key] = value
    return name, config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--work-us", type=float, default=120.0)
    parser.add_argument("--variant", action="append", default=[])
    add_broker_argument(parser)
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant] or [("defaults", {})]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    with BenchBroker(args.broker) as broker:
        broker.pin({1})
        os.sched_setaffinity(0, {0})
        topic = f"publish{int(time.time())}"
        ensure_topics({"bootstrap.servers": broker.bootstrap}, [TopicSpec(topic, 3, 1)])
        for _ in range(args.rounds):
            for name, overrides in variants:
                config = {"bootstrap.servers": broker.bootstrap, **overrides}
                r = run_variant(config, topic, args.seconds, args.concurrency, args.work_us)
                results[name].append(r)
                gc.collect()  # the closed producer's threads end with it
                threads = ", ".join(f"{n} {t:.0f}" for n, t in sorted(r["threads"].items()))
                print(
                    f"{name}: {r['rate']:.0f}/s, p50 {r['p50_ms']:.1f} ms, p99 "
                    f"{r['p99_ms']:.1f} ms, CPU {r['cpu_us']:.0f} us/publish ({threads})",
                    flush=True,
                )
        print(
            f"\nmedians ({machine()}; {broker.name}; {args.concurrency} in flight, "
            f"{args.work_us:.0f} us of other work per publish, {args.rounds} rounds):"
        )
        for name, runs in results.items():

            def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
                return float(statistics.median(r[key] for r in runs))

            print(
                f"  {name}: {med('rate'):.0f}/s, p50 {med('p50_ms'):.1f} ms, p99 "
                f"{med('p99_ms'):.1f} ms, CPU {med('cpu_us') - args.work_us:.0f} us/publish "
                "beyond the work"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
