"""The one TOML configuration, loaded into frozen objects and validated at start-up.

Layout (see docs/configuration.md and `deploy/demo.toml`)::

    [bridge]    topic prefix, schema registry, logging
    [kafka]     librdkafka settings for every client (dotted keys pass through),
                [kafka.producer] / [kafka.consumer] for one kind of client only
    [topics]    partitions, replication factor, topic configs for `topics`
    [gateway] [compactor] [reorderer] [fanout]   per-process settings
    [sources.<name>]  one webhook endpoint: scheme, secrets, selectors, limits
    [sinks.<name>]    one fan-out destination: type, routing, retry policy

Every scalar has an environment twin named ``BRIDGE_<PATH>`` with dots and
dashes turned into underscores (``BRIDGE_GATEWAY_PORT``,
``BRIDGE_SOURCES_JIKO_DEADLINE_S``, ``BRIDGE_KAFKA_BOOTSTRAP_SERVERS``); the
environment wins over the file. Secrets are never values in the file: a source
lists environment-variable names (``secrets``) or files (``secret_files``).
Any error stops the process with one line: ``config error: <key>: <problem>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from schemas.errors import ConfigError
from schemas.providers import DEFAULT_SELECTORS
from schemas.selectors import Selector, parse_selector

ENV_PREFIX = "BRIDGE_"


@dataclass(frozen=True)
class BridgeSettings:
    topic_prefix: str = "webhooks"
    schema_registry_url: str = ""  # empty: Avro single-object encoding, no registry
    log_level: str = "info"
    log_format: str = "kv"  # kv | json


@dataclass(frozen=True)
class TopicSettings:
    partitions: int = 3
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8000
    deadline_s: float = 2.5  # default per-source publish deadline
    body_limit: int = 1_048_576  # default per-source body cap, bytes
    max_in_flight: int = 10_000  # requests waiting for the broker; beyond: 503
    drain_timeout_s: float = 10.0  # SIGTERM: wait this long for in-flight acks
    body_timeout_s: float = 10.0  # a body not fully received by then is answered 408
    header_timeout_s: float = 10.0  # a request head not received by then closes the connection
    max_header_bytes: int = 16_384  # a larger request head (line + headers) is answered 431
    max_headers: int = 100  # more header fields are answered 431
    workers: int = 1  # processes serving one port (`gateway --workers N`), each with a producer
    # from this many publishes in flight, poll for acknowledgements on every event-loop
    # iteration instead of every millisecond (less latency, CPU spent polling); 0: never
    busy_poll_in_flight: int = 16


@dataclass(frozen=True)
class CompactorSettings:
    dedup_horizon_s: float = 7 * 24 * 3600.0
    state_dir: str = ".state/compactor"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9101
    commit_interval_ms: int = 100
    max_batch: int = 5000  # records in one transaction at most
    instance_id: str = "0"


@dataclass(frozen=True)
class ReordererSettings:
    window_s: float = 5.0
    early_release: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9102
    commit_interval_ms: int = 100
    max_batch: int = 5000  # records in one transaction at most
    instance_id: str = "0"


@dataclass(frozen=True)
class FanoutSettings:
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9103
    instance_id: str = "0"


@dataclass(frozen=True)
class Selectors:
    id: Selector | None = None
    type: Selector | None = None
    occurred_at: Selector | None = None
    ordering_key: Selector | None = None


@dataclass(frozen=True)
class SourceSettings:
    """One webhook endpoint, as data: its secrets are named here and read only by the
    gateway when it builds the source's verifier (`gateway.sources`)."""

    name: str
    scheme: str
    provider: str
    selectors: Selectors
    allow_unverified: bool
    deadline_s: float
    body_limit: int
    success_status: int
    dedup_horizon_s: float
    reorder_window_s: float
    secrets: tuple[str, ...] = ()  # environment-variable names of the live secrets
    secret_files: tuple[str, ...] = ()  # files holding secrets (relative to the config)
    verify: Mapping[str, Any] = field(default_factory=dict)  # [sources.X.verify], unread

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The names the secrets go by (safe to show): variables, and files' base names."""
        return (*self.secrets, *(Path(f).name for f in self.secret_files))


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 8
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    max_elapsed_s: float = 3600.0


@dataclass(frozen=True)
class SinkSettings:
    name: str
    type: str
    providers: tuple[str, ...]
    event_types: tuple[str, ...]
    retry: RetrySettings
    options: Mapping[str, Any]  # type-specific, validated by the sink class
    sources: tuple[str, ...] = ("*",)  # source-name globs (a provider may have several)


@dataclass(frozen=True)
class Settings:
    bridge: BridgeSettings
    kafka: Mapping[str, str]
    kafka_producer: Mapping[str, str]
    kafka_consumer: Mapping[str, str]
    topics: TopicSettings
    gateway: GatewaySettings
    compactor: CompactorSettings
    reorderer: ReordererSettings
    fanout: FanoutSettings
    sources: Mapping[str, SourceSettings]
    sinks: Mapping[str, SinkSettings]
    path: str = ""
    # The environment the config was read with, and the config file's folder: where a
    # process that needs a secret (the gateway, a sink) reads it from, when it starts.
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    base_dir: Path = field(default_factory=Path, compare=False)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted({s.provider for s in self.sources.values()}))

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """Every producer's settings: ``message.max.bytes`` fits the largest envelope, and no
        producer asks the broker to create a topic (topics come from `topics`)."""
        from schemas.sizes import producer_message_max_bytes

        fitted = {
            "message.max.bytes": str(producer_message_max_bytes(self)),
            "allow.auto.create.topics": "false",
        }
        return {**fitted, **self.kafka, **self.kafka_producer, **overrides}

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        return {**self.kafka, **self.kafka_consumer, **overrides}

    def admin_config(self) -> dict[str, Any]:
        return dict(self.kafka)


# --------------------------------------------------------------------------- loading

T = TypeVar("T")


def env_name(path: str) -> str:
    return ENV_PREFIX + path.upper().replace(".", "_").replace("-", "_")


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read, overlay the environment, validate. Raises ConfigError with one line."""
    env = dict(os.environ) if env is None else dict(env)
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), f"not valid TOML ({exc})") from None
    consulted = _Consulted(env)
    settings = parse(raw, consulted, base_dir=p.parent)
    _reject_unknown_env(env, consulted.names, raw)
    return dataclasses.replace(settings, path=str(p))


# BRIDGE_* variables read outside the config file (CLI defaults, the broker command).
OTHER_BRIDGE_ENV = frozenset({"BRIDGE_CONFIG", "BRIDGE_BROKER_PORT"})


class _Consulted(dict[str, str]):
    """The environment, remembering every name the loader looked up."""

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(env)
        self.names: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.names.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.names.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.names.add(key)
        return super().__contains__(key)


def _reject_unknown_env(env: Mapping[str, str], consulted: set[str], raw: Any) -> None:
    """A BRIDGE_* variable that names no setting is a typo that would pass silently.

    BRIDGE_KAFKA_* goes to librdkafka as it is (any client property), and a variable
    named as a value in the file (a secret's name) is the file's business."""
    named = set(_strings(raw))
    for name in sorted(env):
        if (
            name.startswith(ENV_PREFIX)
            and not name.startswith(ENV_PREFIX + "KAFKA_")
            and name not in consulted
            and name not in named
            and name not in OTHER_BRIDGE_ENV
        ):
            raise ConfigError(name, "names no setting of this config (a typo?)")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


_TOP_KEYS = (
    "bridge",
    "kafka",
    "topics",
    "gateway",
    "compactor",
    "reorderer",
    "fanout",
    "sources",
    "sinks",
)


def parse(raw: Mapping[str, Any], env: Mapping[str, str], base_dir: Path = Path()) -> Settings:
    _reject_unknown(raw, _TOP_KEYS, "")
    topics_raw = dict(_table(raw, "topics", ""))
    topic_configs = _str_map(topics_raw.pop("config", {}), "topics.config")
    kafka_all, kafka_producer, kafka_consumer = _kafka(_table(raw, "kafka", ""), env)
    gateway = _section(GatewaySettings, _table(raw, "gateway", ""), "gateway", env)
    compactor = _section(CompactorSettings, _table(raw, "compactor", ""), "compactor", env)
    reorderer = _section(ReordererSettings, _table(raw, "reorderer", ""), "reorderer", env)
    sources_raw = _table(raw, "sources", "")
    sources = {
        name: _source(
            name,
            _table(sources_raw, name, "sources."),
            env,
            gateway,
            compactor,
            reorderer,
            base_dir,
        )
        for name in sources_raw
    }
    sinks_raw = _table(raw, "sinks", "")
    sinks = {name: _sink(name, _table(sinks_raw, name, "sinks."), env) for name in sinks_raw}
    settings = Settings(
        bridge=_section(BridgeSettings, _table(raw, "bridge", ""), "bridge", env),
        kafka=kafka_all,
        kafka_producer=kafka_producer,
        kafka_consumer=kafka_consumer,
        topics=dataclasses.replace(
            _section(TopicSettings, topics_raw, "topics", env, skip=("config",)),
            config=topic_configs,
        ),
        gateway=gateway,
        compactor=compactor,
        reorderer=reorderer,
        fanout=_section(FanoutSettings, _table(raw, "fanout", ""), "fanout", env),
        sources=sources,
        sinks=sinks,
        env=dict(env),
        base_dir=base_dir,
    )
    _check_values(settings)
    return settings


# What the providers' documentation rules out (PROVIDERS.md; docs/providers.md lists them).
# Only 200 counts as delivered:
ONLY_200_SCHEMES = frozenset({"justwallet", "jpmorgan"})
# J.P. Morgan expects the 200 within 3 s: the publish deadline must end before that.
ANSWER_WITHIN_S = {"jpmorgan": 3.0}
# J.P. Morgan resends an unanswered notification for up to 72 h, with the same eventId.
RESENDS_FOR_S = {"jpmorgan": 72 * 3600.0}


def _check_values(s: Settings) -> None:
    if s.bridge.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("bridge.log_level", "choose one of: debug, info, warning, error")
    if s.bridge.log_format not in ("kv", "json"):
        raise ConfigError("bridge.log_format", "choose one of: kv, json")
    if not s.bridge.topic_prefix or any(c in s.bridge.topic_prefix for c in " /\\"):
        raise ConfigError("bridge.topic_prefix", "must be a non-empty Kafka topic name part")
    if "bootstrap.servers" not in s.kafka:
        raise ConfigError("kafka.bootstrap.servers", "required (or BRIDGE_KAFKA_BOOTSTRAP_SERVERS)")
    for key, value in (
        ("topics.partitions", s.topics.partitions),
        ("topics.replication_factor", s.topics.replication_factor),
        ("gateway.workers", s.gateway.workers),
        ("compactor.max_batch", s.compactor.max_batch),
        ("reorderer.max_batch", s.reorderer.max_batch),
        ("compactor.commit_interval_ms", s.compactor.commit_interval_ms),
        ("reorderer.commit_interval_ms", s.reorderer.commit_interval_ms),
    ):
        if value < 1:
            raise ConfigError(key, "must be at least 1")
    if not 0 < s.gateway.port < 65536:
        raise ConfigError("gateway.port", f"must be between 1 and 65535 (is {s.gateway.port})")
    for key, port in (
        ("compactor.metrics_port", s.compactor.metrics_port),
        ("reorderer.metrics_port", s.reorderer.metrics_port),
        ("fanout.metrics_port", s.fanout.metrics_port),
    ):
        if not 0 <= port < 65536:  # 0 picks a free port
            raise ConfigError(key, f"must be between 0 (a free one) and 65535 (is {port})")
    for key, host in (
        ("gateway.host", s.gateway.host),
        ("compactor.metrics_host", s.compactor.metrics_host),
        ("reorderer.metrics_host", s.reorderer.metrics_host),
        ("fanout.metrics_host", s.fanout.metrics_host),
    ):
        if not host or _BAD_HOST.search(host):
            raise ConfigError(key, "must be a host name or address without spaces")
    for key, seconds in (
        ("gateway.deadline_s", s.gateway.deadline_s),
        ("gateway.body_timeout_s", s.gateway.body_timeout_s),
        ("gateway.header_timeout_s", s.gateway.header_timeout_s),
        ("compactor.dedup_horizon_s", s.compactor.dedup_horizon_s),
    ):
        if not seconds > 0:
            raise ConfigError(key, "must be positive")
    for key, seconds in (
        ("gateway.drain_timeout_s", s.gateway.drain_timeout_s),
        ("reorderer.window_s", s.reorderer.window_s),
    ):
        if not seconds >= 0:
            raise ConfigError(key, "must be zero or more")
    for key, count in (
        ("gateway.max_in_flight", s.gateway.max_in_flight),
        ("gateway.body_limit", s.gateway.body_limit),
        ("gateway.max_headers", s.gateway.max_headers),
    ):
        if count < 1:
            raise ConfigError(key, "must be at least 1")
    if s.gateway.busy_poll_in_flight < 0:
        raise ConfigError("gateway.busy_poll_in_flight", "must be zero (never) or more")
    if s.gateway.max_header_bytes < 1024:
        raise ConfigError("gateway.max_header_bytes", "must be at least 1024")
    for address in str(s.kafka["bootstrap.servers"]).split(","):
        problem = _address_problem(address.strip())
        if problem is not None:
            raise ConfigError("kafka.bootstrap.servers", problem)
    if s.bridge.schema_registry_url:
        problem = url_problem(s.bridge.schema_registry_url)
        if problem is not None:
            raise ConfigError("bridge.schema_registry_url", problem)
    for source in s.sources.values():
        if not source.reorder_window_s >= 0:
            raise ConfigError(f"sources.{source.name}.reorder_window_s", "must be zero or more")
        if not source.dedup_horizon_s > 0:
            raise ConfigError(f"sources.{source.name}.dedup_horizon_s", "must be positive")
    # Guarantee 1 rests on these two: a 2xx means every in-sync replica has the event,
    # and a retried produce cannot write it twice or out of order.
    producer = s.producer_config()
    if str(producer.get("acks", "all")).lower() not in ("all", "-1"):
        raise ConfigError("kafka.producer.acks", "must be all (or -1): a 2xx promises acks=all")
    if str(producer.get("enable.idempotence", "true")).lower() in ("false", "0"):
        raise ConfigError("kafka.producer.enable.idempotence", "must stay true")
    _check_record_size(s, producer)


def _check_record_size(s: Settings, producer: Mapping[str, Any]) -> None:
    """The largest envelope fits what the producers send and what the topics take."""
    from schemas.sizes import LIBRDKAFKA_MAX, record_limits

    need = record_limits(s)
    origin = (
        f"sources.{need.source}.body_limit = {need.body_limit}"
        if need.source in s.sources
        else f"gateway.body_limit = {need.body_limit}"
    )
    if need.batch > LIBRDKAFKA_MAX:
        raise ConfigError(
            f"sources.{need.source}.body_limit"
            if need.source in s.sources
            else "gateway.body_limit",
            f"too large: its envelope ({need.batch} bytes) exceeds Kafka clients' "
            f"largest message.max.bytes ({LIBRDKAFKA_MAX})",
        )
    mmb_key = (
        "kafka.producer.message.max.bytes"
        if "message.max.bytes" in s.kafka_producer
        else "kafka.message.max.bytes"
    )
    mmb = _int_setting(producer.get("message.max.bytes"), mmb_key)
    if mmb < need.batch:
        raise ConfigError(
            mmb_key,
            f"must be at least {need.batch} (is {mmb}): the largest envelope, {origin} plus "
            f"{need.overhead} bytes of envelope and record overhead, would not fit; "
            "lower the body_limit or raise this",
        )
    topic_max = s.topics.config.get("max.message.bytes")
    if topic_max is not None and _int_setting(topic_max, "topics.config.max.message.bytes") < mmb:
        raise ConfigError(
            "topics.config.max.message.bytes",
            f"must be at least the producers' message.max.bytes, {mmb} (is {topic_max}): "
            f"a batch the producer builds would be refused (the largest envelope, {origin}, "
            f"needs {need.batch})",
        )


def _int_setting(value: Any, key: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(key, "must be an integer number of bytes") from None


def _kafka(
    table: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    common: dict[str, str] = {}
    per_kind: dict[str, dict[str, str]] = {"producer": {}, "consumer": {}}
    for key, value in table.items():
        if key in per_kind:
            per_kind[key] = _str_map(value, f"kafka.{key}")
        elif isinstance(value, Mapping):
            raise ConfigError(
                f"kafka.{key}",
                "only [kafka.producer] and [kafka.consumer] tables "
                "are allowed; quote dotted librdkafka keys",
            )
        else:
            common[key] = _kafka_value(value, f"kafka.{key}")
    # Environment twins: BRIDGE_KAFKA_SASL_PASSWORD -> "sasl.password",
    # BRIDGE_KAFKA_PRODUCER_LINGER_MS -> [kafka.producer] "linger.ms".
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX + "KAFKA_"):
            continue
        rest = name[len(ENV_PREFIX + "KAFKA_") :].lower()
        target = common
        for kind, kind_table in per_kind.items():
            if rest.startswith(kind + "_"):
                target, rest = kind_table, rest[len(kind) + 1 :]
        if rest:
            target[rest.replace("_", ".")] = value
    return common, per_kind["producer"], per_kind["consumer"]


def _kafka_value(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ConfigError(key, "must be a string, number or boolean")


def _str_map(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a table")
    return {k: _kafka_value(v, f"{key}.{k}") for k, v in value.items()}


def _source(
    name: str,
    table: Mapping[str, Any],
    env: Mapping[str, str],
    gateway: GatewaySettings,
    compactor: CompactorSettings,
    reorderer: ReordererSettings,
    base_dir: Path,
) -> SourceSettings:
    where = f"sources.{name}"
    known = (
        "scheme",
        "provider",
        "secrets",
        "secret_files",
        "allow_unverified",
        "deadline_s",
        "body_limit",
        "success_status",
        "dedup_horizon_s",
        "reorder_window_s",
        "select",
        "verify",
    )
    _reject_unknown(table, known, where + ".")
    if not _is_name(name):
        raise ConfigError(where, "source names use lower-case letters, digits, '-' and '_'")
    scheme = _scalar(table, "scheme", str, where, env, required=True)
    allow_unverified = _scalar(table, "allow_unverified", bool, where, env, default=False)
    if scheme == "none" and not allow_unverified:
        raise ConfigError(
            f"{where}.scheme",
            "'none' accepts unverified webhooks; set allow_unverified = true to run it on purpose",
        )
    secret_names, secret_files = _secret_names(table, where)
    options = table.get("verify", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}.verify", "must be a table")
    provider = _scalar(table, "provider", str, where, env, default=name)
    if not _is_name(provider):
        raise ConfigError(f"{where}.provider", "use lower-case letters, digits, '-' and '_'")
    select = table.get("select", {})
    if not isinstance(select, Mapping):
        raise ConfigError(f"{where}.select", "must be a table")
    _reject_unknown(select, ("id", "type", "occurred_at", "ordering_key"), f"{where}.select.")
    defaults = DEFAULT_SELECTORS.get(scheme, {})
    parsed: dict[str, Selector | None] = {}
    for key in ("id", "type", "occurred_at", "ordering_key"):
        text = env.get(env_name(f"{where}.select.{key}"), select.get(key, defaults.get(key)))
        parsed[key] = None if text is None else parse_selector(text, f"{where}.select.{key}")
    status = _scalar(table, "success_status", int, where, env, default=200)
    if status not in (200, 201, 202):  # the answer carries a JSON body: never 204
        raise ConfigError(f"{where}.success_status", "choose one of: 200, 201, 202")
    if status != 200 and scheme in ONLY_200_SCHEMES:
        raise ConfigError(
            f"{where}.success_status", f"must be 200: {scheme} counts any other code as a failure"
        )
    body_limit = _scalar(table, "body_limit", int, where, env, default=gateway.body_limit)
    deadline_s = _scalar(table, "deadline_s", float, where, env, default=gateway.deadline_s)
    if body_limit < 1:
        raise ConfigError(f"{where}.body_limit", "must be a positive number of bytes")
    if deadline_s <= 0:
        raise ConfigError(f"{where}.deadline_s", "must be positive")
    dedup_horizon_s = _scalar(
        table, "dedup_horizon_s", float, where, env, default=compactor.dedup_horizon_s
    )
    _check_provider_limits(scheme, where, table, env, deadline_s, dedup_horizon_s)
    return SourceSettings(
        name=name,
        scheme=scheme,
        provider=provider,
        selectors=Selectors(**parsed),
        allow_unverified=allow_unverified,
        deadline_s=deadline_s,
        body_limit=body_limit,
        success_status=status,
        dedup_horizon_s=dedup_horizon_s,
        reorder_window_s=_scalar(
            table, "reorder_window_s", float, where, env, default=reorderer.window_s
        ),
        secrets=secret_names,
        secret_files=secret_files,
        verify=dict(options),
    )


def _check_provider_limits(
    scheme: str,
    where: str,
    table: Mapping[str, Any],
    env: Mapping[str, str],
    deadline_s: float,
    dedup_horizon_s: float,
) -> None:
    def origin(key: str, section: str) -> str:
        own = key in table or env_name(f"{where}.{key}") in env
        return "" if own else f", from {section}.{key}"

    limit = ANSWER_WITHIN_S.get(scheme)
    if limit is not None and deadline_s >= limit:
        raise ConfigError(
            f"{where}.deadline_s",
            f"must be below {limit} (is {deadline_s}{origin('deadline_s', 'gateway')}): "
            f"{scheme} counts an answer after {limit:g} s as a failure",
        )
    resends = RESENDS_FOR_S.get(scheme)
    if resends is not None and dedup_horizon_s < resends:
        raise ConfigError(
            f"{where}.dedup_horizon_s",
            f"must be at least {resends:g} (is {dedup_horizon_s:g}"
            f"{origin('dedup_horizon_s', 'compactor')}): {scheme} resends a notification "
            f"for up to {resends / 3600:g} h, and a shorter horizon lets the resend through",
        )


def _secret_names(table: Mapping[str, Any], where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The secrets a source names (variables, files): checked for form, never read here."""
    names = table.get("secrets", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}.secrets", "must be a list of environment-variable names")
    files = table.get("secret_files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"{where}.secret_files", "must be a list of file paths")
    return tuple(names), tuple(files)


def _sink(name: str, table: Mapping[str, Any], env: Mapping[str, str]) -> SinkSettings:
    where = f"sinks.{name}"
    if not _is_name(name):
        raise ConfigError(where, "sink names use lower-case letters, digits, '-' and '_'")
    sink_type = _scalar(table, "type", str, where, env, required=True)
    providers = _globs(table, "providers", where)
    event_types = _globs(table, "event_types", where)
    sources = _globs(table, "sources", where)
    retry = _section(RetrySettings, _table(table, "retry", where + "."), f"{where}.retry", env)
    if retry.max_attempts < 1:
        raise ConfigError(f"{where}.retry.max_attempts", "must be at least 1")
    for key in ("initial_backoff_s", "max_backoff_s", "max_elapsed_s"):
        if not getattr(retry, key) > 0:
            raise ConfigError(f"{where}.retry.{key}", "must be positive")
    if retry.max_backoff_s < retry.initial_backoff_s:
        raise ConfigError(f"{where}.retry.max_backoff_s", "must be at least initial_backoff_s")
    options = {
        k: v
        for k, v in table.items()
        if k not in ("type", "providers", "sources", "event_types", "retry")
    }
    return SinkSettings(
        name=name,
        type=sink_type,
        providers=providers,
        event_types=event_types,
        sources=sources,
        retry=retry,
        options=options,
    )


def _globs(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, ["*"])
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key}", "must be a non-empty list of glob patterns")
    return tuple(value)


def url_problem(url: str) -> str | None:
    """Why `url` is no usable absolute http(s) URL, or None. One check for every URL."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of 0-65535 or not a number
    except ValueError as exc:
        if "port" in str(exc).lower():
            return "port must be a number between 1 and 65535"
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an absolute http:// or https:// URL"
    host = parts.hostname or ""
    if not host or _BAD_HOST.search(host):
        return "needs a host name without spaces or control characters"
    if port is not None and not 0 < port < 65536:
        return "port must be between 1 and 65535"
    return None


_BAD_HOST = re.compile(r"[\s\x00-\x1f\x7f/\\?#@]")


def _address_problem(address: str) -> str | None:
    """`host[:port]`, maybe after a ``proto://`` (librdkafka's bootstrap server forms)."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or "]" in port:  # no port (librdkafka's default), or a bare [IPv6] address
        host, port = address.split("://", 1)[-1], ""
    if not host or _BAD_HOST.search(host):
        return f"{address!r} is not host:port"
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        return f"{address!r}: port must be between 1 and 65535"
    return None


def _is_name(text: str) -> bool:
    return bool(text) and all(c.islower() or c.isdigit() or c in "-_" for c in text)


def _table(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}{key}", "must be a table")
    return value


def _reject_unknown(table: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}{key}", f"unknown key; valid: {', '.join(known)}")


def _section(
    cls: type[T],
    table: Mapping[str, Any],
    where: str,
    env: Mapping[str, str],
    skip: tuple[str, ...] = (),
) -> T:
    """Build a settings dataclass from a table plus BRIDGE_* twins of its scalars."""
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    names = tuple(f.name for f in dataclasses.fields(cls))
    _reject_unknown(table, names, where + ".")
    values: dict[str, Any] = {}
    for name in names:
        if name in skip:
            continue
        kind = hints[name]
        if kind in (str, int, float, bool):
            value = _scalar(table, name, kind, where, env, default=None)
            if value is not None:
                values[name] = value
    return cls(**values)


def _scalar(
    table: Mapping[str, Any],
    key: str,
    kind: type[T],
    where: str,
    env: Mapping[str, str],
    *,
    default: Any = None,
    required: bool = False,
) -> T:
    path = f"{where}.{key}"
    twin = env.get(env_name(path))
    if twin is not None:
        return _coerce_env(twin, kind, path)
    if key not in table:
        if required:
            raise ConfigError(path, "required")
        fallback: T = default
        return fallback
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise ConfigError(path, f"must be {_kind_name(kind)}, got {type(value).__name__}")
    result: T = value
    return result


def _coerce_env(text: str, kind: type[T], path: str) -> T:
    problem = ConfigError(path, f"{env_name(path)} must be {_kind_name(kind)}")
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise problem
        return typing.cast(T, text.lower() in ("true", "1", "yes"))
    try:
        return kind(text)  # type: ignore[call-arg]
    except ValueError:
        raise problem from None


_KIND_NAMES: dict[type[Any], str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}


def _kind_name(kind: type[Any]) -> str:
    return _KIND_NAMES.get(kind, kind.__name__)


DEFAULT_CONFIG_ENV = "BRIDGE_CONFIG"


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=os.environ.get(DEFAULT_CONFIG_ENV, "deploy/demo.toml"),
        help=f"TOML config file (env {DEFAULT_CONFIG_ENV}; default deploy/demo.toml)",
    )
