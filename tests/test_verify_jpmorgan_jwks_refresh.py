"""J.P. Morgan JWKS rotation: a JWKS URL (or file) is reloaded without a restart.

A real HTTP server on 127.0.0.1 serves a JWKS the tests rotate and counts its hits.
The refresh clock (`keys.monotonic`) is replaced by a fake one, so the rate limit and
the maximum age are tested without sleeping; the reloads themselves run for real on
their background thread, and the tests wait for it (`JwksSource.wait`).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from gateway.verify import build_verifier, keys
from gateway.verify.base import Verifier
from gateway.verify.jpmorgan import JPMorganVerifier
from schemas.errors import ConfigError, VerificationError
from tests.verify_vectors import NOW, make_ctx, req, write_jwks

ISSUER, AUDIENCE = "https://idp.example/", "webhook-bridge"
BODY = b'{"eventId":"e-1","eventType":"TRANSACTION_COMPLETED"}'
WAIT_S = 5.0  # an upper bound for a local reload; a passing run takes milliseconds


@dataclass
class JwksServer:
    """Serves `body` with `status` at /jwks; `gate`, while set to an unset event, stalls."""

    body: bytes = b""
    status: int = 200
    hits: int = 0
    gate: threading.Event | None = None
    url: str = ""
    server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def publish(self, jwks: dict[str, ec.EllipticCurvePrivateKey]) -> None:
        self.body = json.dumps(jwks_document(jwks)).encode()
        self.status = 200

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def jwks_document(jwks: dict[str, ec.EllipticCurvePrivateKey]) -> dict[str, Any]:
    entries = []
    for kid, key in jwks.items():
        entry = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        entries.append({**entry, "kid": kid})
    return {"keys": entries}


@pytest.fixture
def server() -> Iterator[JwksServer]:
    state = JwksServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            if state.gate is not None:
                state.gate.wait(WAIT_S)
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    state.server = httpd
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/jwks"
    yield state
    if state.gate is not None:
        state.gate.set()
    state.stop()


class Clock:
    def __init__(self) -> None:
        self.t = 10_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(keys, "monotonic", fake)
    return fake


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.getMessage()} {getattr(r, 'fields', {})}" for r in self.records)


@pytest.fixture
def records() -> Iterator[Records]:
    logger = logging.getLogger("webhook_bridge")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def key_a() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def key_b() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def token(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, str]:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 60, "iat": NOW}
    signed = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
    return {"Authorization": "Bearer " + signed}


def jwt_verifier(**jwt_options: Any) -> JPMorganVerifier:
    options = {"jwt": {"issuer": ISSUER, "audience": AUDIENCE, **jwt_options}}
    verifier = build_verifier("jpmorgan", make_ctx(options=options))
    assert isinstance(verifier, JPMorganVerifier)
    return verifier


def source_of(verifier: JPMorganVerifier) -> keys.JwksSource:
    rotating = verifier.rotating_bearer or verifier.rotating_signature
    assert rotating is not None and rotating.source is not None
    return rotating.source


def settle(verifier: JPMorganVerifier) -> None:
    """Wait for a background reload, if one runs, to finish (and be applied)."""
    assert source_of(verifier).wait(WAIT_S), "the JWKS reload did not finish"


def accepted(verifier: Verifier, headers: dict[str, str]) -> str | None:
    return verifier.verify(req(headers, BODY), NOW).key_id


def rejected(verifier: Verifier, headers: dict[str, str]) -> str:
    with pytest.raises(VerificationError) as info:
        verifier.verify(req(headers, BODY), NOW)
    return info.value.reason


def test_new_kid_accepted_after_rotation_without_restart(
    server: JwksServer, clock: Clock, key_a: Any, key_b: Any
) -> None:
    server.publish({"a": key_a})
    verifier = jwt_verifier(jwks_url=server.url)
    assert server.hits == 1  # the start-up load
    assert accepted(verifier, token(key_a, "a")) == "a"

    server.publish({"b": key_b})  # the identity provider rotates
    clock.advance(61)
    assert rejected(verifier, token(key_b, "b")) == "unknown_key"  # fails closed meanwhile
    settle(verifier)
    assert server.hits == 2
    assert accepted(verifier, token(key_b, "b")) == "b"  # the retry gets through
    assert rejected(verifier, token(key_a, "a")) == "unknown_key"  # the removed key is gone
    assert verifier.bearer is not None and [k.kid for k in verifier.bearer.all] == ["b"]


def test_refetch_is_rate_limited(server: JwksServer, clock: Clock, key_a: Any) -> None:
    server.publish({"a": key_a})
    verifier = jwt_verifier(jwks_url=server.url)
    ghost = token(key_a, "ghost")  # a kid the identity provider never publishes

    for _ in range(20):  # within a minute of the start-up load: no fetch at all
        assert rejected(verifier, ghost) == "unknown_key"
    settle(verifier)
    assert server.hits == 1

    clock.advance(60)
    for _ in range(20):
        assert rejected(verifier, ghost) == "unknown_key"
        settle(verifier)
    assert server.hits == 2  # one reload for the whole burst

    clock.advance(59)
    assert rejected(verifier, ghost) == "unknown_key"
    settle(verifier)
    assert server.hits == 2
    clock.advance(1)
    assert rejected(verifier, ghost) == "unknown_key"
    settle(verifier)
    assert server.hits == 3
    assert accepted(verifier, token(key_a, "a")) == "a"  # known kids never fetch
    settle(verifier)
    assert server.hits == 3


def test_refresh_interval_and_max_age_are_configurable(
    server: JwksServer, clock: Clock, key_a: Any, key_b: Any
) -> None:
    server.publish({"a": key_a})
    verifier = jwt_verifier(jwks_url=server.url, jwks_refresh_min_s=5, jwks_max_age_s=300)
    clock.advance(5)
    assert rejected(verifier, token(key_a, "ghost")) == "unknown_key"
    settle(verifier)
    assert server.hits == 2

    # Only the known kid is used from here: the maximum age alone reloads the JWKS.
    server.publish({"b": key_b})
    clock.advance(299)
    assert accepted(verifier, token(key_a, "a")) == "a"
    settle(verifier)
    assert server.hits == 2
    clock.advance(1)
    assert accepted(verifier, token(key_a, "a")) == "a"  # stale, reload started
    settle(verifier)
    assert server.hits == 3
    assert rejected(verifier, token(key_a, "a")) == "unknown_key"  # removed key stops working
    assert accepted(verifier, token(key_b, "b")) == "b"


def test_refresh_failure_keeps_old_keys(
    server: JwksServer, clock: Clock, records: Records, key_a: Any, key_b: Any
) -> None:
    server.publish({"a": key_a})
    verifier = jwt_verifier(jwks_url=server.url)
    good, new = token(key_a, "a"), token(key_b, "b")
    published = server.body

    server.status, server.body = 500, b'{"error": "boom"}'
    clock.advance(60)
    assert rejected(verifier, new) == "unknown_key"
    settle(verifier)
    assert server.hits == 2
    assert accepted(verifier, good) == "a"

    server.status, server.body = 200, b"<html>maintenance</html>"
    clock.advance(60)
    assert rejected(verifier, new) == "unknown_key"
    settle(verifier)
    assert server.hits == 3
    assert accepted(verifier, good) == "a"

    server.status, server.body = 200, json.dumps({"keys": []}).encode()
    clock.advance(3600)  # the maximum age passes too: still the old keys on failure
    assert accepted(verifier, good) == "a"
    settle(verifier)
    assert server.hits == 4
    assert accepted(verifier, good) == "a"

    server.stop()  # the identity provider is down
    clock.advance(60)
    assert rejected(verifier, new) == "unknown_key"
    settle(verifier)
    assert accepted(verifier, good) == "a"

    warnings = [r for r in records.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    errors = [getattr(r, "fields", {}).get("error") for r in warnings]
    assert errors[0] == "HTTP 500"
    assert errors[1] == errors[2] == "not a usable JWKS (RSA, EC or OKP keys)"
    assert errors[3] in {"URLError", "ConnectionRefusedError", "RemoteDisconnected"}
    logged = records.text()
    assert "sources.test.verify.jwt.jwks_url" in logged
    assert server.url not in logged and "127.0.0.1" not in logged
    for entry in json.loads(published)["keys"]:
        assert entry["x"] not in logged and entry["y"] not in logged


def test_failed_refresh_is_retried_after_the_interval(
    server: JwksServer, clock: Clock, key_a: Any, key_b: Any
) -> None:
    server.publish({"a": key_a})
    verifier = jwt_verifier(jwks_url=server.url)
    server.status = 503
    clock.advance(60)
    assert rejected(verifier, token(key_b, "b")) == "unknown_key"
    settle(verifier)
    server.publish({"a": key_a, "b": key_b})  # the provider recovers, rotated
    clock.advance(30)
    assert rejected(verifier, token(key_b, "b")) == "unknown_key"
    settle(verifier)
    assert server.hits == 2
    clock.advance(30)
    assert rejected(verifier, token(key_b, "b")) == "unknown_key"
    settle(verifier)
    assert server.hits == 3
    assert accepted(verifier, token(key_b, "b")) == "b"
    assert accepted(verifier, token(key_a, "a")) == "a"


def test_a_slow_identity_provider_never_stalls_a_request(
    server: JwksServer, clock: Clock, key_a: Any, key_b: Any
) -> None:
    server.publish({"a": key_a})
    verifier = jwt_verifier(jwks_url=server.url)
    server.gate = threading.Event()  # the next fetch hangs until released
    server.publish({"a": key_a, "b": key_b})
    clock.advance(60)
    started = time.perf_counter()
    assert rejected(verifier, token(key_b, "b")) == "unknown_key"
    assert accepted(verifier, token(key_a, "a")) == "a"
    assert time.perf_counter() - started < 0.5  # the fetch is still hanging
    assert not source_of(verifier).wait(0.05)
    assert rejected(verifier, token(key_b, "b")) == "unknown_key"  # one fetch in flight
    server.gate.set()
    settle(verifier)
    assert server.hits == 2
    assert accepted(verifier, token(key_b, "b")) == "b"


def test_jwks_file_is_reread_when_rotated(
    tmp_path: Path, clock: Clock, key_a: Any, key_b: Any
) -> None:
    path = write_jwks(tmp_path / "idp.jwks", {"a": key_a})
    verifier = jwt_verifier(jwks_file=str(path))
    assert accepted(verifier, token(key_a, "a")) == "a"
    write_jwks(path, {"b": key_b})  # a mounted Secret rotates in place
    clock.advance(60)
    assert rejected(verifier, token(key_b, "b")) == "unknown_key"
    settle(verifier)
    assert accepted(verifier, token(key_b, "b")) == "b"
    path.unlink()  # an unreadable file keeps the keys too
    clock.advance(3600)
    assert accepted(verifier, token(key_b, "b")) == "b"
    settle(verifier)
    assert accepted(verifier, token(key_b, "b")) == "b"


def test_signature_keys_from_jwks_url_rotate(
    server: JwksServer, clock: Clock, key_a: Any, key_b: Any
) -> None:
    server.publish({"a": key_a})
    options = {"signature": {"jwks_url": server.url}}
    verifier = build_verifier("jpmorgan", make_ctx(options=options))
    assert isinstance(verifier, JPMorganVerifier)

    def signed(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, str]:
        return {"Signature": base64.b64encode(keys.sign(key, BODY)).decode(), "Key-ID": kid}

    assert accepted(verifier, signed(key_a, "a")) == "a"
    server.publish({"b": key_b})
    clock.advance(60)
    assert rejected(verifier, signed(key_b, "b")) == "unknown_key"
    settle(verifier)
    assert accepted(verifier, signed(key_b, "b")) == "b"
    assert rejected(verifier, signed(key_a, "a")) == "unknown_key"
    assert server.hits == 2


@pytest.mark.parametrize("name", ["jwks_refresh_min_s", "jwks_max_age_s"])
@pytest.mark.parametrize("value", [0, -1, "soon", True])
def test_refresh_options_are_validated(tmp_path: Path, key_a: Any, name: str, value: Any) -> None:
    path = write_jwks(tmp_path / "idp.jwks", {"a": key_a})
    with pytest.raises(ConfigError) as info:
        jwt_verifier(jwks_file=str(path), **{name: value})
    assert info.value.key == f"sources.test.verify.jwt.{name}"
