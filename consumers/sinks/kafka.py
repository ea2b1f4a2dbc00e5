"""``type = "kafka"``: produce each event to an internal topic, in one transaction with offsets.

Options (``[sinks.<name>]``):

- ``topic`` (``"internal.{provider}.{event_type}"``): topic name template; fields
  ``{provider}``, ``{event_type}``, ``{source}``, ``{sink}``. The result is
  sanitised to Kafka's legal characters (``[a-zA-Z0-9._-]``, others become ``_``,
  at most 249 characters). Topics are created by the broker on first produce
  (``auto.create.topics.enable``) or beforehand by the operator.
- ``value`` (``"envelope"``): ``envelope`` = the Avro envelope bytes unchanged,
  ``body`` = the provider's original payload.
- ``transactional_id`` (``"<prefix>.fanout.<sink>.<instance_id>"``).

Records keep the ordering key and the ce_* headers. Produces and the consumer's
offsets are committed in one Kafka transaction every commit interval, so on
Apache Kafka a crash neither loses nor duplicates (read_committed readers).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import string
from collections.abc import Mapping
from typing import Any

from consumers.sinks.base import DeliveryResult, Event, Sink, SinkContext, SinkError
from gateway.config import SinkSettings
from gateway.verify.common import Options

DEFAULT_TEMPLATE = "internal.{provider}.{event_type}"
TEMPLATE_FIELDS = ("provider", "event_type", "source", "sink")
MAX_TOPIC_CHARS = 249
_ILLEGAL = re.compile(r"[^a-zA-Z0-9._-]")


def sanitise_topic(name: str) -> str:
    """A legal Kafka topic name: illegal characters become ``_``; never ``.``/``..``."""
    cleaned = _ILLEGAL.sub("_", name)[:MAX_TOPIC_CHARS]
    if cleaned in ("", ".", ".."):
        cleaned = cleaned.replace(".", "_") or "_"
    return cleaned


def render_topic(template: str, *, provider: str, event_type: str, source: str, sink: str) -> str:
    return sanitise_topic(
        template.format(provider=provider, event_type=event_type, source=source, sink=sink)
    )


class KafkaSink(Sink):
    OPTIONS = ("topic", "value", "transactional_id")
    commits_offsets = True

    def __init__(self, settings: SinkSettings, context: SinkContext) -> None:
        super().__init__(settings, context)
        from confluent_kafka import Producer

        self.template, self.value_mode = _parse(self.options)
        s = context.settings
        txn_id = self.options.opt_text("transactional_id") or (
            f"{s.bridge.topic_prefix}.fanout.{self.name}.{s.fanout.instance_id}"
        )
        self._producer = Producer(
            {
                **s.producer_config(),
                "transactional.id": txn_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        self._producer.init_transactions(30)
        self._in_txn = False
        self._topics: dict[tuple[str, str, str], str] = {}

    @classmethod
    def validate(cls, settings: SinkSettings, env: Mapping[str, str]) -> None:
        _parse(cls.options_for(settings))

    def topic_for(self, event: Event) -> str:
        env = event.envelope
        cache_key = (env.provider, env.event_type, env.source)
        topic = self._topics.get(cache_key)
        if topic is None:
            topic = render_topic(
                self.template,
                provider=env.provider,
                event_type=env.event_type,
                source=env.source,
                sink=self.name,
            )
            if len(self._topics) < 10_000:
                self._topics[cache_key] = topic
        return topic

    async def deliver(self, event: Event) -> DeliveryResult:
        if not self._in_txn:
            self._producer.begin_transaction()
            self._in_txn = True
        value = event.value if self.value_mode == "envelope" else event.envelope.body
        headers: list[tuple[str, str | bytes | None]] = list(event.headers)
        while True:
            try:
                self._producer.produce(
                    self.topic_for(event), value=value, key=event.key, headers=headers
                )
                break
            except BufferError:  # local queue full: let librdkafka send, then go on
                self._producer.poll(0)
                await asyncio.sleep(0.005)
        self._producer.poll(0)
        return DeliveryResult.ok()

    def commit_offsets(self, offsets: list[Any], group_metadata: Any) -> None:
        from confluent_kafka import KafkaException

        if not offsets and not self._in_txn:
            return
        try:
            if not self._in_txn:
                self._producer.begin_transaction()
                self._in_txn = True
            if offsets:
                self._producer.send_offsets_to_transaction(offsets, group_metadata, 30)
            self._producer.commit_transaction(30)
            self._in_txn = False
        except KafkaException as exc:
            # Records of this transaction may be lost or visible without offsets; the
            # safe move is to stop: a restart resumes from the last committed offsets.
            raise SinkError(f"sink {self.name}: transaction failed: {exc.args[0]}") from None

    async def close(self) -> None:
        if self._in_txn:
            # Closing anyway: whatever this transaction held is redelivered after restart.
            with contextlib.suppress(Exception):
                self._producer.abort_transaction(10)
        self._producer.flush(10)


def _parse(opts: Options) -> tuple[str, str]:
    template = opts.text("topic", DEFAULT_TEMPLATE)
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise opts.fail("topic", f"not a valid template ({exc})") from None
    unknown = sorted(fields - set(TEMPLATE_FIELDS))
    if unknown or "" in fields:
        raise opts.fail(
            "topic",
            f"unknown field {{{unknown[0] if unknown else ''}}}; valid: "
            + ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS),
        )
    return template, opts.choice("value", "envelope", ("envelope", "body"))
