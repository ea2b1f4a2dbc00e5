"""Fan-out destinations: one `Sink` class per type (`http`, `kafka`, `log`, or custom)."""

from __future__ import annotations

from consumers.sinks.base import DeliveryResult, Event, Sink, SinkContext, SinkError
from consumers.sinks.registry import SINK_TYPES, build_sink, sink_class

__all__ = [
    "SINK_TYPES",
    "DeliveryResult",
    "Event",
    "Sink",
    "SinkContext",
    "SinkError",
    "build_sink",
    "sink_class",
]
