"""Fan-out CPU per record in process, without a broker (not a test).

    python -m tests.bench.bench_fanout_cpu [--records 20000] [--rounds 3] [--sink null|http]
                                           [--profile cprofile.out]

Runs the real `SinkRunner` loop (accept, decode, route, lanes, the deliverer's
semaphore, breaker and metrics, offset tracking, commits) on uvloop pinned to core
0, reading bench_fanout's envelopes from a stand-in consumer that hands out records
in batches of up to 500 as the runner asks, and prints CPU microseconds per record:

- ``null``: the sink answers ok at once: what the fan-out itself costs per record;
- ``yield``: the same, but the sink yields to the loop three times first, as I/O
  would: lanes then queue for the 64 slots, as they do behind a real receiver;
- ``http``: the real HTTP sink (aiohttp) posting to bench_fanout's receiver on
  core 1: the fan-out's whole CPU per delivery, as `bench_fanout` measures it, less
  librdkafka.

So ``http`` minus ``null`` is the HTTP client's share, and ``null`` is the lever
of issue 13's last item.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import os
import resource
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.bench_fanout import PARTITIONS, SECRET, envelopes, start_receiver


class _Message:
    __slots__ = ("_headers", "_key", "_offset", "_partition", "_topic", "_value")

    def __init__(
        self, topic: str, partition: int, offset: int, key: bytes, value: bytes, headers: Any
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers = key, value, headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> Any:
        return self._headers


class _Consumer:
    """Hands out prepared records like `Consumer.consume(n, timeout=0)`; commits go nowhere."""

    def __init__(self, messages: list[_Message]) -> None:
        self.messages = messages
        self.at = 0

    def consume(self, num_messages: int, timeout: float) -> list[_Message]:
        out = self.messages[self.at : self.at + num_messages]
        self.at += len(out)
        return out

    def commit(self, offsets: Any, asynchronous: bool) -> None:
        return None

    def assignment(self) -> list[Any]:
        return []


class _NullSink:
    def __init__(self, name: str, yields: int = 0) -> None:
        self.name = name
        self.commits_offsets = False
        self.yields = yields

    async def deliver(self, event: Any) -> Any:
        from consumers.sinks.base import DeliveryResult

        for _ in range(self.yields):  # stand-in for I/O: lanes then wait for slots
            await asyncio.sleep(0)
        return DeliveryResult.ok(200)

    async def close(self) -> None:
        return None


def records(topic: str, n: int, start: int) -> list[_Message]:
    from schemas.records import ce_headers
    from schemas.serde import EnvelopeSerializer

    serialize = EnvelopeSerializer()
    out = []
    offsets = [0] * PARTITIONS
    for env in envelopes(n, start, paced=False):
        key = env.ordering_key.encode()
        partition = hash(key) % PARTITIONS
        out.append(
            _Message(
                topic, partition, offsets[partition], key, serialize(env, topic), ce_headers(env)
            )
        )
        offsets[partition] += 1
    return out


def one_round(runner: Any, messages: list[_Message], profile: cProfile.Profile | None) -> float:
    """CPU microseconds per record to deliver `messages` through `runner`."""
    consumer = _Consumer(messages)
    runner._consumer = consumer
    for p in range(PARTITIONS):
        runner.tracker.assign(messages[0].topic(), p)

    async def go() -> float:
        stop = asyncio.Event()

        async def watch() -> None:
            while consumer.at < len(messages) or runner.tracker.in_flight or runner.lanes:
                await asyncio.sleep(0.005)
            stop.set()

        before = resource.getrusage(resource.RUSAGE_SELF)
        if profile is not None:
            profile.enable()
        await asyncio.gather(runner._loop(stop), watch())
        if profile is not None:
            profile.disable()
        after = resource.getrusage(resource.RUSAGE_SELF)
        await runner.sink.close()
        return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    import uvloop

    cpu = uvloop.run(go())
    return cpu / len(messages) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sink", choices=("null", "yield", "http"), default="null")
    parser.add_argument("--profile", help="write a cProfile of the last round here")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=0,
        help="the runner's max_in_flight (default: the bench config's 5000); at least "
        "--records keeps the runner from polling while full, whose cost is per wall-clock "
        "millisecond, not per record: for instruction counts under valgrind",
    )
    args = parser.parse_args(argv)

    from prometheus_client import CollectorRegistry

    from consumers.fanout.delivery import Deliverer
    from consumers.fanout.metrics import FanoutMetrics
    from consumers.fanout.policy import Breaker
    from consumers.fanout.runner import SinkRunner
    from consumers.sinks import SinkContext, build_sink
    from deploy.broker import free_port
    from schemas.config import load
    from tests.bench.bench_fanout import write_config

    os.environ["BENCH_SECRET"] = SECRET
    port = free_port()
    receiver = None
    if args.sink == "http":
        receiver = start_receiver(port)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "bench.toml"
            write_config(config, "127.0.0.1:9", "cpu", port, 10, 64)
            settings = load(config)
        sink_settings = settings.sinks["http"]
        topic = "cpu.bench.ordered"
        results = []
        for r in range(args.rounds):
            metrics = FanoutMetrics(CollectorRegistry())
            metrics.init_sinks(["http"], settings.providers)
            if args.sink == "http":
                sink: Any = build_sink(sink_settings, SinkContext(settings, dict(os.environ)))
            else:
                sink = _NullSink("http", yields=3 if args.sink == "yield" else 0)
            runner = SinkRunner(settings, sink_settings, sink, metrics)
            if args.max_in_flight:
                runner.options = dataclasses.replace(
                    runner.options, max_in_flight=args.max_in_flight
                )
            runner._deliverer = Deliverer(
                sink, sink_settings.retry, Breaker(10, 5.0), runner.options.concurrency, metrics
            )
            runner._dlq = object()  # type: ignore[assignment]  # nothing fails here
            messages = records(topic, args.records, r * args.records)
            profile = cProfile.Profile() if args.profile and r == args.rounds - 1 else None
            results.append(one_round(runner, messages, profile))
            if profile is not None:
                profile.dump_stats(args.profile)
        print(
            f"fan-out CPU per record in process, sink {args.sink}, {args.records} records: "
            + " / ".join(f"{x:.1f}" for x in results)
            + f" us (median {sorted(results)[len(results) // 2]:.1f})"
        )
    finally:
        if receiver is not None:
            receiver.kill()
            receiver.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
