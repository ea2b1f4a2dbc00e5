"""Sink type registry: an alias table plus ``"package.module:Class"`` for custom sinks."""

from __future__ import annotations

import importlib

from consumers.sinks.base import Sink, SinkContext
from schemas.config import SinkSettings
from schemas.errors import ConfigError

SINK_TYPES: dict[str, str] = {
    "http": "consumers.sinks.http:HttpSink",
    "kafka": "consumers.sinks.kafka:KafkaSink",
    "log": "consumers.sinks.log:LogSink",
}


def sink_class(settings: SinkSettings) -> type[Sink]:
    """The class for `settings.type`, imported lazily; ConfigError names `sinks.<name>.type`."""
    where = f"sinks.{settings.name}.type"
    target = SINK_TYPES.get(settings.type, settings.type)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            where,
            f"unknown sink type {settings.type!r}; valid: "
            f"{', '.join(SINK_TYPES)} or 'package.module:Class'",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(where, f"cannot import {module_name} ({exc})") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Sink)):
        raise ConfigError(where, f"{target} is not a consumers.sinks.base.Sink subclass")
    return cls


def build_sink(settings: SinkSettings, context: SinkContext) -> Sink:
    return sink_class(settings)(settings, context)
