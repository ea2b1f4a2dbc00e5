"""A timer thread beside every consumer process: can it reach the broker, how far behind is it.

Off the processing path on purpose. The numbers an on-call SRE reads must stay true
when the processing loop is not moving: a fan-out full at ``max_in_flight`` reads
nothing (its read position freezes), and a stage waiting for the broker makes no
calls at all. So this thread asks the cluster itself, with its own admin client,
every `interval_s`:

- reachability: a Metadata request (for the watched topics; every Kafka-protocol
  broker answers it) answered within the interval sets
  ``webhook_bridge_broker_reachable{process}`` to 1, anything else to 0, and while
  it is 0 one log line per interval says for how long (the processes themselves wait
  without a bound: see `consumers.runtime.loop`);
- lag of each watched group: log end offset (last stable offset, what a
  read_committed consumer can reach) minus the group's committed offset, summed over
  every partition of its topics, assigned, paused or orphaned alike; a partition the
  group never committed counts from its earliest offset (``auto.offset.reset`` is
  earliest). When the broker cannot answer, the last value stays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas import logs

WATCH_INTERVAL_S = 2.0


@dataclass(frozen=True)
class GroupLag:
    """One consumer group whose lag a gauge child shows, per topic (children may repeat)."""

    group: str
    gauges: Mapping[str, Any]  # topic -> gauge child; topics sharing a child are summed


class BrokerWatch:
    def __init__(
        self,
        admin_config: Mapping[str, Any],
        process: str,
        reachable: Any,
        groups: Sequence[GroupLag] = (),
        interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self.process = process
        self.interval_s = interval_s
        self._admin_config = dict(admin_config)
        self._reachable = reachable  # the gauge child of this process
        self._groups = list(groups)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-watch", daemon=True)
        self._down_since: float | None = None
        self._admin: Any = None
        self._readers: dict[str, Any] = {}  # group -> a consumer that never subscribes

    def start(self) -> BrokerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 10.0)

    def _run(self) -> None:
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        self._admin = AdminClient({**self._admin_config, "log_level": 0})
        for group in self._groups:
            self._readers[group.group] = Consumer(
                {**self._admin_config, "group.id": group.group, "log_level": 0}
            )
        try:
            while not self._stopped.is_set():
                started = time.monotonic()
                self.check()
                logs.flush_client_logs()  # the counts of bursts the clients' logs held back
                self._stopped.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        finally:
            for reader in self._readers.values():
                reader.close()

    def check(self) -> bool:
        """One round: reachability, then (when reachable) every group's lag."""
        from confluent_kafka import KafkaException

        timeout = max(1.0, self.interval_s)
        partitions: dict[str, list[int]] = {}
        try:
            for topic in sorted({t for group in self._groups for t in group.gauges}):
                meta = self._admin.list_topics(topic, timeout=timeout).topics.get(topic)
                if meta is not None and meta.error is None:
                    partitions[topic] = sorted(meta.partitions)
            if not self._groups:
                self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            self._unreachable(str(exc.args[0] if exc.args else exc))
            return False
        self._reached()
        for group in self._groups:
            try:
                reader = self._readers[group.group]
                lags = group_lag(self._admin, reader, partitions, timeout)
            except KafkaException as exc:
                logs.warning("lag query failed", group=group.group, error=str(exc))
                continue
            totals: dict[int, tuple[Any, int]] = {}
            for topic, gauge in group.gauges.items():
                seen = totals.get(id(gauge), (gauge, 0))
                totals[id(gauge)] = (gauge, seen[1] + lags.get(topic, 0))
            for gauge, value in totals.values():
                gauge.set(value)
        return True

    def _unreachable(self, error: str) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        self._reachable.set(0)
        logs.warning(
            "broker unreachable; waiting for it",
            process=self.process,
            down_for_s=round(now - self._down_since, 1),
            error=error,
        )

    def _reached(self) -> None:
        if self._down_since is not None:
            logs.info(
                "broker reachable again",
                process=self.process,
                down_for_s=round(time.monotonic() - self._down_since, 1),
            )
            self._down_since = None
        self._reachable.set(1)


def group_lag(
    admin: Any, reader: Any, partitions: Mapping[str, Sequence[int]], timeout_s: float
) -> dict[str, int]:
    """{topic: sum over its partitions of (last stable offset - committed offset)}.

    `reader` is a consumer with the group's ``group.id`` that never subscribes: its
    ``committed()`` is an OffsetFetch, no join. (The admin client's
    list_consumer_group_offsets crashes the interpreter for a group that does not exist
    yet, in confluent-kafka 2.16.)
    """
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin._listoffsets import OffsetSpec

    tps = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
    if not tps:
        return {}
    committed = {
        (tp.topic, tp.partition): tp.offset for tp in reader.committed(tps, timeout=timeout_s)
    }

    def offsets(spec: Any) -> dict[tuple[str, int], int]:
        futures = admin.list_offsets(
            {tp: spec for tp in tps},
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=timeout_s,
        )
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    latest, earliest = OffsetSpec.latest(), OffsetSpec.earliest()  # type: ignore[no-untyped-call]
    ends = offsets(latest)
    uncommitted = any(committed.get(where, -1) < 0 for where in ends)
    starts = offsets(earliest) if uncommitted else {}
    lag = dict.fromkeys(partitions, 0)
    for where, end in ends.items():
        position = committed.get(where, -1)
        if position < 0:
            position = starts.get(where, 0)
        lag[where[0]] += max(0, end - position)
    return lag
