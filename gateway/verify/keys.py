"""Asymmetric keys: loading (PEM, certificates, JWKS) and signature checks.

The algorithm always follows from the key type, never from a request header:
EC -> ECDSA with SHA-256 (DER or raw r||s accepted), RSA -> PKCS#1 v1.5 with
SHA-256, Ed25519 -> Ed25519.
"""

from __future__ import annotations

import functools
import json
import threading
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any, TypeGuard

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from schemas import logs
from schemas.errors import ConfigError
from schemas.options import Options

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
JWKS_FETCH_TIMEOUT_S = 5.0
JWKS_MAX_BYTES = 1_000_000
JWKS_REFRESH_MIN_S = 60.0  # defaults of jwks_refresh_min_s and jwks_max_age_s
JWKS_MAX_AGE_S = 3600.0


def public_key(opts: Options, name: str) -> PublicKey | None:
    """The public key (PEM public key or PEM certificate) in the file option `name` names."""
    data = opts.file_bytes(name)
    if data is None:
        return None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise opts.fail(name, "not a PEM public key or certificate") from None
    return _supported(opts, name, key)


def private_key(opts: Options, name: str) -> PrivateKey | None:
    data = opts.file_bytes(name)
    if data is None:
        return None
    try:
        key: Any = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise opts.fail(name, "not an unencrypted PEM private key") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise opts.fail(name, "unsupported key type; valid: EC, RSA, Ed25519")
    return key


def _supported(opts: Options, name: str, key: Any) -> PublicKey:
    if not _is_supported(key):
        raise opts.fail(name, "unsupported key type; valid: EC, RSA, Ed25519")
    return key


def _is_supported(key: Any) -> TypeGuard[PublicKey]:
    return isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey)


def jwks(opts: Options, file_option: str, url_option: str | None = None) -> list[jwt.PyJWK]:
    """The current keys of the JWKS file (or URL) that the options name (see `jwks_source`)."""
    source = jwks_source(opts, file_option, url_option)
    return [] if source is None else list(source.keys)


def jwks_source(
    opts: Options, file_option: str, url_option: str | None = None
) -> JwksSource | None:
    """The JWKS the options name, loaded now (a `ConfigError` if it cannot be), kept fresh.

    One source per options table: `jwks` and a caller that wants to follow rotations
    (`JwksSource.subscribe`) share one start-up load. Refresh timing comes from
    ``jwks_refresh_min_s`` and ``jwks_max_age_s`` in the same table.
    """
    memo_key = (file_option, url_option)
    with _SOURCES_LOCK:
        known = _SOURCES.get(opts, {})
        if memo_key in known:
            return known[memo_key]
    name = file_option
    load: Callable[[], bytes]
    if opts.has(file_option):
        path = opts.base_dir / opts.text(file_option, "")
        load = functools.partial(_read_file, path)
        text = opts.file_bytes(file_option)
    elif url_option is not None and opts.has(url_option):
        name = url_option
        url = opts.text(url_option, "")
        if not url.startswith(("https://", "http://")):
            raise opts.fail(url_option, "must be an http(s) URL")
        load = functools.partial(_fetch_url, url)
        try:
            text = load()
        except (OSError, ValueError) as exc:
            raise opts.fail(name, f"cannot fetch the JWKS ({type(exc).__name__})") from None
    else:
        return None
    assert text is not None
    try:
        first = _parse_jwks(text)
    except JwksProblem as exc:
        raise opts.fail(name, str(exc)) from None
    source = JwksSource(
        opts.key(name),
        load,
        text,
        first,
        min_interval_s=opts.number("jwks_refresh_min_s", JWKS_REFRESH_MIN_S),
        max_age_s=opts.number("jwks_max_age_s", JWKS_MAX_AGE_S),
    )
    with _SOURCES_LOCK:
        return _SOURCES.setdefault(opts, {}).setdefault(memo_key, source)


_SOURCES: weakref.WeakKeyDictionary[Options, dict[tuple[str, str | None], JwksSource]] = (
    weakref.WeakKeyDictionary()
)
_SOURCES_LOCK = threading.Lock()


def _read_file(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(JWKS_MAX_BYTES)


def _fetch_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=JWKS_FETCH_TIMEOUT_S) as response:  # noqa: S310
        body: bytes = response.read(JWKS_MAX_BYTES)
        return body


class JwksProblem(ValueError):
    """A JWKS document is unusable; the message is one safe line (no key material)."""


def _parse_jwks(text: bytes) -> tuple[jwt.PyJWK, ...]:
    """The keys of a JWKS document; `JwksProblem` if unusable."""
    try:
        found = tuple(jwt.PyJWKSet.from_dict(json.loads(text)).keys)
    except (ValueError, TypeError, KeyError, AttributeError, jwt.PyJWTError):
        raise JwksProblem("not a usable JWKS (RSA, EC or OKP keys)") from None
    if not all(_is_supported(key.key) for key in found):
        raise JwksProblem("unsupported key type; valid: EC, RSA, Ed25519")
    return found


# Why a background refresh rather than a fetch inside `verify`: verification runs
# synchronously on the event loop, so even a bounded (say 2 s) fetch on the request
# path would stall every source's requests while the identity provider is slow. A
# token whose kid is unknown is therefore refused at once (401 unknown_key, fails
# closed) and a refresh starts on a thread; the provider's retry, a moment later,
# sees the new keys. The hot path only reads a reference and compares two floats.
class JwksSource:
    """A JWKS (file or URL) that follows key rotations without a restart.

    `refresh` (on a token with an unknown kid) and `poll` (every request: reloads
    once the keys are older than ``max_age_s``, so removed keys stop working) start
    at most one background load per ``min_interval_s``; that rate limit also bounds
    what tokens with made-up kids can make the gateway fetch. A failed load keeps the
    previous keys, logs a warning (the option name and the error type, never the URL
    or key material) and is retried on the next trigger after the interval. A file is
    re-read on the same schedule (a mounted Kubernetes Secret rotates in place).
    Subscribers run on the loading thread when, and only when, the document changed.
    """

    def __init__(
        self,
        name: str,
        load: Callable[[], bytes],
        text: bytes,
        first: tuple[jwt.PyJWK, ...],
        *,
        min_interval_s: float,
        max_age_s: float,
    ) -> None:
        self.name = name  # the option's full key, e.g. sources.jpm.verify.jwt.jwks_url
        self.keys = first
        self.min_interval_s = min_interval_s
        self.max_age_s = max_age_s
        self._load = load
        self._text = text
        self._subscribers: list[weakref.WeakMethod[Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._attempted_at = self._loaded_at = monotonic()

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call the bound method `callback` (on the loading thread) after each load that
        changed the keys. Held weakly: the subscriber's owner decides how long it lives."""
        self._subscribers.append(weakref.WeakMethod(callback))

    def poll(self) -> None:
        """Start a background reload if the keys are older than the maximum age."""
        if monotonic() - self._loaded_at >= self.max_age_s:
            self.refresh()

    def refresh(self) -> bool:
        """Start a background reload unless one runs or the last began < min interval ago."""
        with self._lock:
            now = monotonic()
            if self._thread is not None or now - self._attempted_at < self.min_interval_s:
                return False
            self._attempted_at = now
            self._thread = threading.Thread(target=self._reload, name="jwks-refresh", daemon=True)
            self._thread.start()
            return True

    def wait(self, timeout: float) -> bool:
        """Wait for a running reload (tests, shutdown); True once none runs."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._thread is None

    def _reload(self) -> None:
        try:
            text = self._load()
            if text != self._text:
                self.keys = _parse_jwks(text)  # one reference swap: readers never lock
                self._text = text
                kids = ",".join(sorted(k.key_id or "-" for k in self.keys))
                logs.info("jwks keys changed", option=self.name, keys=len(self.keys), kids=kids)
                self._notify()
            self._loaded_at = monotonic()
        except Exception as exc:  # any failure keeps the previous keys
            logs.warning("jwks refresh failed; keeping the previous keys", option=self.name,
                         error=_problem(exc))  # fmt: skip
        finally:
            with self._lock:
                self._thread = None

    def _notify(self) -> None:
        for ref in self._subscribers:
            callback = ref()
            if callback is None:
                continue
            try:
                callback()
            except Exception as exc:  # that subscriber keeps its previous keys
                logs.warning("jwks keys not applied; keeping the previous keys",
                             option=self.name, error=_problem(exc))  # fmt: skip


def _problem(exc: Exception) -> str:
    """What went wrong, safe to log: never a URL, a response body or key material."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, JwksProblem | ConfigError):  # our own one-line problems
        return str(exc)
    return type(exc).__name__


def verify_signature(key: PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            return _verify_ecdsa(key, signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _verify_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    algorithm = ec.ECDSA(hashes.SHA256())
    size = (key.curve.key_size + 7) // 8
    candidates = [signature]
    if len(signature) == 2 * size:  # raw r||s (IEEE P1363, JOSE) -> DER
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        candidates.append(encode_dss_signature(r, s))
    for candidate in candidates:
        try:
            key.verify(candidate, message, algorithm)
        except (InvalidSignature, ValueError):
            continue
        return True
    return False


def sign(key: PrivateKey, message: bytes) -> bytes:
    """DER for ECDSA, PKCS#1 v1.5 for RSA (both SHA-256), raw for Ed25519."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))
