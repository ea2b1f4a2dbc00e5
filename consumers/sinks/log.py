"""``type = "log"``: one structured log line per event (never the body). No options."""

from __future__ import annotations

from consumers.sinks.base import DeliveryResult, Event, Sink
from schemas import logs
from schemas.envelope import micros_to_iso


class LogSink(Sink):
    async def deliver(self, event: Event) -> DeliveryResult:
        env = event.envelope
        logs.info(
            "event",
            sink=self.name,
            provider=env.provider,
            event_id=env.event_id,
            event_type=env.event_type,
            ordering_key=env.ordering_key,
            occurred_at=micros_to_iso(env.occurred_at),
            late=event.late,
            topic=event.topic,
            partition=event.partition,
            offset=event.offset,
        )
        return DeliveryResult.ok()
