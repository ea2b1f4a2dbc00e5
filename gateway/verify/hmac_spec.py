"""The options of the declarative HMAC mechanism, parsed once into an `HmacSpec`.

Option reference: `gateway.verify.hmac_scheme`. Presets are option defaults;
the source's own ``[sources.X.verify]`` table overrides them.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.verify.base import Secret
from gateway.verify.common import decode_b64
from schemas.errors import ConfigError
from schemas.options import Options

OPTIONS = (
    "header", "format", "prefix", "kv_separator", "signature_key", "timestamp_key", "version",
    "timestamp_header", "id_header", "type_header", "template", "algorithm", "encoding",
    "key_encoding", "key_prefix", "tolerance_s",
)  # fmt: skip

PRESETS: Mapping[str, Mapping[str, Any]] = {
    "hmac": {},
    "jiko": {"header": "x-jiko-signature", "encoding": "base64"},
    "fintoc": {"header": "Fintoc-Signature", "format": "kv", "template": "{timestamp}.{body}"},
    "stripe": {"header": "Stripe-Signature", "format": "kv", "template": "{timestamp}.{body}"},
    "github": {
        "header": "X-Hub-Signature-256",
        "prefix": "sha256=",
        "id_header": "X-GitHub-Delivery",
        "type_header": "X-GitHub-Event",
    },
    "shopify": {
        "header": "X-Shopify-Hmac-SHA256",
        "encoding": "base64",
        "id_header": ["X-Shopify-Webhook-Id", "X-Shopify-Event-Id"],
        "type_header": "X-Shopify-Topic",
    },
    "slack": {
        "header": "X-Slack-Signature",
        "prefix": "v0=",
        "timestamp_header": "X-Slack-Request-Timestamp",
        "template": "v0:{timestamp}:{body}",
    },
}

Template = tuple[tuple[str, bytes], ...]  # ("lit", bytes) | ("body"|"timestamp"|"id", b"")


@dataclass(frozen=True, slots=True)
class HmacSpec:
    scheme: str
    header: str  # as configured, for signers; looked up lower-cased
    format: str
    prefix: str
    kv_separator: str
    signature_key: str
    timestamp_key: str
    version: str
    timestamp_header: str | None
    id_headers: tuple[str, ...]
    type_headers: tuple[str, ...]
    template: Template
    algorithm: str
    encoding: str
    key_encoding: str
    key_prefix: str
    tolerance_s: float

    @property
    def signs(self) -> frozenset[str]:
        return frozenset(kind for kind, _ in self.template if kind != "lit")


def parse_spec(scheme: str, where: str, options: Mapping[str, Any]) -> HmacSpec:
    opts = Options({**PRESETS.get(scheme, {}), **options}, f"{where}.verify", OPTIONS)
    header = opts.opt_text("header")
    if not header:
        raise opts.fail("header", "required: the name of the signature header")
    fmt = opts.choice("format", "plain", ("plain", "kv", "list"))
    prefix = opts.text("prefix", "")
    if prefix and fmt != "plain":
        raise opts.fail("prefix", "only applies to format = 'plain'")
    spec = HmacSpec(
        scheme=scheme,
        header=header,
        format=fmt,
        prefix=prefix,
        kv_separator=opts.text("kv_separator", ",") or ",",
        signature_key=opts.text("signature_key", "v1"),
        timestamp_key=opts.text("timestamp_key", "t"),
        version=opts.text("version", "v1"),
        timestamp_header=opts.opt_text("timestamp_header"),
        id_headers=opts.texts("id_header", ()),
        type_headers=opts.texts("type_header", ()),
        template=_parse_template(opts, opts.text("template", "{body}")),
        algorithm=opts.choice("algorithm", "sha256", ("sha1", "sha256", "sha512")),
        encoding=opts.choice("encoding", "hex", ("hex", "base64")),
        key_encoding=opts.choice("key_encoding", "utf-8", ("utf-8", "base64")),
        key_prefix=opts.text("key_prefix", ""),
        tolerance_s=opts.number("tolerance_s", 300.0),
    )
    if "timestamp" in spec.signs and fmt != "kv" and not spec.timestamp_header:
        raise opts.fail("template", "signs {timestamp} but no timestamp_header is set")
    if "id" in spec.signs and not spec.id_headers:
        raise opts.fail("template", "signs {id} but no id_header is set")
    return spec


def _parse_template(opts: Options, text: str) -> Template:
    parts: list[tuple[str, bytes]] = []
    try:
        for literal, field, spec, conversion in string.Formatter().parse(text):
            if literal:
                parts.append(("lit", literal.encode("utf-8")))
            if field is None:
                continue
            if field not in ("body", "timestamp", "id") or spec or conversion:
                raise opts.fail(
                    "template", f"unknown field {{{field}}}; valid: body, timestamp, id"
                )
            parts.append((field, b""))
    except ValueError:
        raise opts.fail("template", "unbalanced braces; valid: {body}, {timestamp}, {id}") from None
    if ("body", b"") not in parts:
        raise opts.fail("template", "must contain {body}")
    return tuple(parts)


def render(template: Template, body: bytes, timestamp: bytes, event_id: bytes) -> bytes:
    values = {"body": body, "timestamp": timestamp, "id": event_id}
    return b"".join(text if kind == "lit" else values[kind] for kind, text in template)


def hmac_keys(spec: HmacSpec, where: str, secrets: Sequence[Secret]) -> list[tuple[str, bytes]]:
    keys = []
    for secret in secrets:
        value = secret.value
        if spec.key_encoding == "base64":
            stripped = value.decode("latin-1").removeprefix(spec.key_prefix)
            decoded = decode_b64(stripped + "=" * (-len(stripped) % 4))
            if not decoded:
                raise ConfigError(
                    f"{where}.secrets",
                    f"secret {secret.key_id} is not base64 after prefix {spec.key_prefix!r}",
                )
            value = decoded
        keys.append((secret.key_id, value))
    return keys
