"""Bad input never crashes the gateway, never gets a 5xx but the designed 503,
and never publishes anything unverified (hypothesis-generated requests)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from deploy.topics import ensure_topics
from gateway.app import create_app
from schemas.config import Settings
from schemas.topics import implied_topics
from tests.conftest import KafkaCluster
from tests.support import gateway_toml, read_topic, settings_from_toml

pytestmark = pytest.mark.kafka

OPEN_SOURCE = """
[sources.open]
scheme = "none"
allow_unverified = true
body_limit = 2048
[sources.svix]
scheme = "standard-webhooks"
secrets = ["SVIX_WEBHOOK_SECRET"]
[sources.stripe]
scheme = "stripe"
secrets = ["STRIPE_WEBHOOK_SECRET"]
[sources.github]
scheme = "github"
secrets = ["GITHUB_WEBHOOK_SECRET"]
[sources.jpmorgan]
scheme = "jpmorgan"
[sources.jpmorgan.verify]
methods = ["static-headers"]
static_headers = { "X-Custom-Key" = "JPMORGAN_WEBHOOK_SECRET" }
[sources.declared]
scheme = "hmac"
secrets = ["JIKO_WEBHOOK_SECRET"]
[sources.declared.verify]
header = "X-Sig"
format = "kv"
timestamp_key = "t"
signature_key = "v1"
template = "{timestamp}.{body}"
tolerance_s = 300
"""
VERIFYING = ["jiko", "fintoc", "justwallet", "svix", "stripe", "github", "jpmorgan", "declared"]
ALLOWED = {200, 202, 401, 404, 405, 413}
header_names = st.sampled_from(
    [
        "x-jiko-signature",
        "fintoc-signature",
        "signature",
        "webhook-secret",
        "content-type",
        "content-length-ish",
        "x-request-id",
        "stripe-signature",
        "x-anything",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-hub-signature-256",
        "x-github-event",
        "x-custom-key",
        "x-sig",
    ]
) | st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
    min_size=1,
    max_size=40,
)
header_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
    max_size=300,
) | st.sampled_from(
    ["t=1,v1=00", "t=notanumber,v1=zz", "v1,AAAA", "=" * 5000, "sha256=" + "a" * 64]
)
bodies = (
    st.binary(max_size=3000)
    | st.sampled_from([b"[" * 50_000, b'{"event_type": "x"}', b"\xff\xfe\x00", b'{"a": 1e999}'])
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=30,
    ).map(lambda v: repr(v).encode())
)


@pytest.fixture(scope="module")
def fuzz_app(kafka: KafkaCluster) -> Iterator[tuple[TestClient, Settings]]:
    prefix = f"fuzz-{time.time_ns()}"
    config = settings_from_toml(gateway_toml(kafka.bootstrap, prefix, OPEN_SOURCE))
    ensure_topics(config.admin_config(), implied_topics(config))
    with TestClient(create_app(config), raise_server_exceptions=True) as client:
        yield client, config


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    source=st.sampled_from([*VERIFYING, "open", "nope"]),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    headers=st.dictionaries(header_names, header_values, max_size=6),
    body=bodies,
)
def test_any_request_gets_a_designed_answer(
    fuzz_app: tuple[TestClient, Settings],
    source: str,
    method: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    client, _ = fuzz_app
    raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    response = client.request(method, f"/webhooks/{source}", content=body, headers=raw_headers)
    assert response.status_code in ALLOWED | {503}, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    if source != "open" and method == "POST" and source != "nope":
        assert response.status_code in {401, 413}, answer  # nothing random verifies
    if response.status_code == 401:
        assert answer["reason"] in {
            "missing_header",
            "malformed_header",
            "bad_signature",
            "stale_timestamp",
            "future_timestamp",
            "unknown_key",
            "expired_key",
            "bad_token",
            "body_unreadable",
        }


def test_fuzzing_published_nothing_unverified(fuzz_app: tuple[TestClient, Settings]) -> None:
    """Runs after the property test in this module: every topic of every verifying source
    is empty; the only records anywhere came through the unverified `open` source."""
    from schemas.serde import EnvelopeDeserializer

    client, config = fuzz_app
    assert client.get("/healthz").status_code == 200
    bootstrap = config.kafka["bootstrap.servers"]
    decode = EnvelopeDeserializer()
    for spec in implied_topics(config):  # raw, unique, ordered, changelogs, quarantine, DLQs
        records = read_topic(bootstrap, spec.name, idle_s=0.5)
        sources = {decode(m.value()).source for m in records}
        assert sources <= {"open"}, f"{spec.name}: records from {sources - {'open'}}"
