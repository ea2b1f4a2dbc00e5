"""Avro serde for the envelope, in the shape of confluent-kafka's serializers.

Two wire formats:

- Confluent Schema Registry framing, when a registry URL is configured:
  ``0x00`` + 4-byte big-endian schema id + Avro binary. The schema is registered
  under ``<topic>-value`` (TopicNameStrategy) once per topic and cached.
- Avro single-object encoding otherwise: ``0xC3 0x01`` + 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema's canonical form + Avro binary.

`EnvelopeDeserializer` reads both. A writer schema it does not know (an older or
newer envelope version) is resolved against the reader schema by Avro's rules.
In single-object encoding the writer schema comes from its fingerprint, so every
envelope version ever written ships in ``schemas/history/`` and every reader knows
them all: a new version is added there one release before any gateway writes it
(readers first), and records of every version stay readable.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import struct
import warnings
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import avro_reader
from schemas.avro_writer import encode_envelope
from schemas.envelope import Envelope
from schemas.errors import BridgeError

SO_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0


class SerdeError(BridgeError):
    """Bytes that are not an envelope this reader can decode."""


@cache
def envelope_schema_text() -> str:
    return resources.files("schemas").joinpath("envelope.avsc").read_text(encoding="utf-8")


@cache
def envelope_schema() -> Any:
    return fastavro.parse_schema(json.loads(envelope_schema_text()))


@cache
def known_envelope_schemas() -> dict[bytes, str]:
    """{fingerprint: schema text} of every envelope version in ``schemas/history/``."""
    folder = resources.files("schemas").joinpath("history")
    texts = [f.read_text(encoding="utf-8") for f in folder.iterdir() if f.name.endswith(".avsc")]
    return {schema_fingerprint(text): text for text in texts}


def schema_fingerprint(schema_text: str) -> bytes:
    canonical = to_parsing_canonical_form(fastavro.parse_schema(json.loads(schema_text)))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))[::-1]  # little-endian on wire


def _registry(url: str) -> Any:
    # The client imports authlib, whose import warns that httpx is deprecated (on every
    # gateway start) after adding an "always" filter of its own: silence that one only.
    with warnings.catch_warnings():
        with contextlib.suppress(ImportError):
            importlib.import_module("authlib.deprecate")
        warnings.filterwarnings("ignore", message=".*httpx2")
        from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": url})


class EnvelopeSerializer:
    """`serializer(envelope, topic) -> bytes`; topic only matters in registry mode."""

    def __init__(self, registry_url: str = "", registry: Any = None) -> None:
        self._registry = registry or (_registry(registry_url) if registry_url else None)
        self._ids: dict[str, bytes] = {}
        self._so_prefix = SO_MAGIC + schema_fingerprint(envelope_schema_text())

    @property
    def uses_registry(self) -> bool:
        return self._registry is not None

    def prepare(self, topic: str) -> None:
        """Register the schema for a topic ahead of time (no registry call per request)."""
        if self._registry is None or topic in self._ids:
            return
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        subject = f"{topic}-value"
        try:
            schema_id = self._registry.register_schema(
                subject, Schema(envelope_schema_text(), "AVRO")
            )
        except SchemaRegistryError as exc:  # the registry answered, and said no
            said = " ".join(str(exc.error_message).split())  # one line, whatever it sent
            hint = (
                ": this envelope is not compatible with the versions the subject has, "
                "at its compatibility level (see docs/schema-registry.md)"
                if exc.http_status_code == 409
                else ""
            )
            raise SerdeError(
                f"schema registry refused the envelope schema for subject {subject} "
                f"(HTTP {exc.http_status_code}, code {exc.error_code}): {said}{hint}"
            ) from exc
        except Exception as exc:
            said = " ".join(str(exc).split())
            raise SerdeError(
                f"cannot register the envelope schema for subject {subject}: "
                f"{type(exc).__name__}: {said}"
            ) from exc
        self._ids[topic] = struct.pack(">bI", CONFLUENT_MAGIC, schema_id)

    def __call__(self, envelope: Envelope, topic: str = "") -> bytes:
        if self._registry is not None:
            if topic not in self._ids:
                self.prepare(topic)
            prefix = self._ids[topic]
        else:
            prefix = self._so_prefix
        try:
            return prefix + encode_envelope(envelope)
        except (ValueError, TypeError, AttributeError) as exc:
            raise SerdeError(f"cannot encode envelope: {exc}") from exc


class EnvelopeDeserializer:
    """Reads both wire formats into `Envelope`; raises SerdeError on anything else."""

    def __init__(
        self,
        registry_url: str = "",
        registry: Any = None,
        known_schemas: Mapping[bytes, str] | None = None,
    ) -> None:
        self._reader = envelope_schema()
        self._registry = registry or (_registry(registry_url) if registry_url else None)
        self._by_fingerprint: dict[bytes, Any] = {
            schema_fingerprint(envelope_schema_text()): self._reader
        }
        known = {**known_envelope_schemas(), **(known_schemas or {})}
        for fp, text in known.items():
            self._by_fingerprint[fp] = fastavro.parse_schema(json.loads(text))
        self._by_id: dict[int, Any] = {}
        # The fast reader serves only its own schema, and only while it is the reader's.
        self._fast = schema_fingerprint(envelope_schema_text()) == avro_reader.FINGERPRINT
        self._fast_ids: set[int] = set()  # registry ids whose schema is that one

    def __call__(self, data: bytes | None, topic: str = "") -> Envelope:
        if not data:
            raise SerdeError("empty value")
        if data[:2] == SO_MAGIC:
            fp = data[2:10]
            writer = self._by_fingerprint.get(fp)
            if writer is None:
                raise SerdeError("single-object encoding with an unknown schema fingerprint")
            if self._fast and fp == avro_reader.FINGERPRINT and type(data) is bytes:
                try:
                    return avro_reader.decode_envelope(data, 10)
                except Exception:  # noqa: S110 - not for the fast path: fastavro decides below
                    pass
            payload = data[10:]
        elif data[0] == CONFLUENT_MAGIC and len(data) >= 5:
            (schema_id,) = struct.unpack(">I", data[1:5])
            writer = self._writer_by_id(schema_id)
            if schema_id in self._fast_ids and type(data) is bytes:
                try:
                    return avro_reader.decode_envelope(data, 5)
                except Exception:  # noqa: S110 - as above
                    pass
            payload = data[5:]
        else:
            raise SerdeError("not an Avro envelope (unknown magic byte)")
        try:
            record = fastavro.schemaless_reader(io.BytesIO(payload), writer, self._reader)
        except Exception as exc:
            raise SerdeError(f"cannot decode envelope: {type(exc).__name__}") from exc
        if not isinstance(record, dict):
            raise SerdeError("envelope is not a record")
        try:
            return Envelope.from_record(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise SerdeError(f"envelope record is incomplete: {type(exc).__name__}") from exc

    def framed(self, data: bytes | None) -> bool:
        """A cheap look at the framing only (no decode): could `self(data)` read it?"""
        if not data or len(data) < 5:
            return False
        if data[:2] == SO_MAGIC:
            return len(data) > 10 and data[2:10] in self._by_fingerprint
        if data[0] == CONFLUENT_MAGIC:
            return self._registry is not None or struct.unpack(">I", data[1:5])[0] in self._by_id
        return False

    def _writer_by_id(self, schema_id: int) -> Any:
        writer = self._by_id.get(schema_id)
        if writer is not None:
            return writer
        if self._registry is None:
            raise SerdeError("Confluent-framed envelope but no schema registry is configured")
        try:
            text = self._registry.get_schema(schema_id).schema_str
            writer = fastavro.parse_schema(json.loads(text))
            fast = self._fast and schema_fingerprint(text) == avro_reader.FINGERPRINT
        except Exception as exc:
            raise SerdeError(f"cannot fetch schema id {schema_id}: {type(exc).__name__}") from exc
        self._by_id[schema_id] = writer
        if fast:
            self._fast_ids.add(schema_id)
        return writer
