"""Helpers shared by the gateway tests: settings from TOML text, a uvicorn server, Kafka reads."""

from __future__ import annotations

import logging
import socket
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from confluent_kafka import Consumer

from schemas import config as config_module
from schemas.config import Settings

DEMO_ENV = {
    "JIKO_WEBHOOK_SECRET": "jiko-secret-0123456789",
    "JUSTWALLET_WEBHOOK_SECRET": "justwallet-secret",
    "JPMORGAN_WEBHOOK_SECRET": "jpm-static-token",
    "FINTOC_WEBHOOK_SECRET": "fintoc-secret",
    "GITHUB_WEBHOOK_SECRET": "github-secret",
    "STRIPE_WEBHOOK_SECRET": "whsec_stripe-secret",
    "SVIX_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "DEMO_RECEIVER_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


def settings_from_toml(text: str, env: Mapping[str, str] | None = None) -> Settings:
    return config_module.parse(tomllib.loads(text), dict(env if env is not None else DEMO_ENV))


def gateway_settings(text: str, env: Mapping[str, str] | None = None) -> Settings:
    """What the gateway checks at start-up: the config, then every source's secrets and
    verifier (the config alone reads no secret)."""
    from gateway.sources import build_verifiers

    settings = settings_from_toml(text, env)
    build_verifiers(settings)
    return settings


def gateway_toml(bootstrap: str, prefix: str, extra: str = "") -> str:
    return f"""
[bridge]
topic_prefix = "{prefix}"
[kafka]
"bootstrap.servers" = "{bootstrap}"
[topics]
partitions = 2
[sources.jiko]
scheme = "jiko"
secrets = ["JIKO_WEBHOOK_SECRET"]
body_limit = 4096
success_status = 202
[sources.fintoc]
scheme = "fintoc"
secrets = ["FINTOC_WEBHOOK_SECRET"]
deadline_s = 1.0
[sources.justwallet]
scheme = "justwallet"
secrets = ["JUSTWALLET_WEBHOOK_SECRET"]
{extra}
"""


class LogRecords(logging.Handler):
    """Every record of the `webhook_bridge` loggers, also once `logs.setup()` stopped them
    propagating to the root logger (where pytest's caplog listens)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def fields(self, *messages: str) -> list[dict[str, Any]]:
        """msg, level and the structured fields of the records with one of `messages`."""
        return [
            {"msg": r.getMessage(), "level": r.levelno, **getattr(r, "fields", {})}
            for r in self.records
            if r.getMessage() in messages
        ]

    def clear(self) -> None:
        self.records.clear()


@contextmanager
def captured_logs(level: int = logging.DEBUG) -> Iterator[LogRecords]:
    logger = logging.getLogger("webhook_bridge")
    handler, previous = LogRecords(), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def wait_until_ok(url: str, process: Any, timeout_s: float) -> None:
    """Poll `url` until it answers 200; fail if `process` exits or `timeout_s` passes."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, f"{url} never 200"
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any, settings: Settings | None = None, **overrides: Any) -> Iterator[str]:
    """Run an ASGI app under a real uvicorn server on a free loopback port; with
    `settings`, under the gateway's own server configuration (gateway.server), with
    uvicorn options `overrides` on top."""
    port = free_port()
    if settings is not None:
        from gateway.server import uvicorn_config

        config = uvicorn_config(
            app,
            settings,
            "127.0.0.1",
            port,
            **{"log_level": "error", "timeout_graceful_shutdown": 5, **overrides},
        )
    else:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="error",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    idle_s: float = 3.0,
    timeout_s: float = 30.0,
) -> list[Any]:
    """Read a topic from the start with assign() (no group join): until `expect` records
    arrived, or nothing new came for `idle_s` (the embedded broker's watermarks are wrong)."""
    from confluent_kafka import TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline:
            if expect is not None and len(out) >= expect:
                break
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                if expect is None and time.monotonic() - last > idle_s:
                    break
                continue
            out.append(msg)
            last = time.monotonic()
        return out
    finally:
        consumer.close()


def write_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
