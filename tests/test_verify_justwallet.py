"""Just Wallet: the token of its prose and the HMACs of its Node, PHP and Ruby samples.

The golden vectors in tests/vectors/justwallet.json were computed by the samples'
formulas in the real runtimes (node, php, ruby); tests/vectors/justwallet_runtimes.py
re-makes them. These tests read the JSON only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy.samples import sample_body
from deploy.send import prepare
from gateway.sources import verify_context
from gateway.verify import build_verifier, sign_request
from gateway.verify.base import BuildContext
from gateway.verify.justwallet import MODES
from gateway.verify.reserialize import WRITERS, parse
from schemas.config import SourceSettings
from schemas.errors import BridgeError, ConfigError
from tests.support import settings_from_toml
from tests.verify_vectors import assert_rejected, hmac_hex, make_ctx, req, verify

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "justwallet.json").read_text(encoding="utf-8")
)
SECRET: str = VECTORS["secret"]
OTHER = "jw-other-secret-0123456789"
CASES: dict[str, dict[str, Any]] = {case["name"]: case for case in VECTORS["cases"]}
RUNTIMES = ("node", "php", "ruby")
HEADER = {"node": "Signature", "php": "Signature", "ruby": "Webhook-Secret"}
MODE = {rt: f"hmac-reserialized-{rt}" for rt in RUNTIMES}
PAYOUT = "payout as sent: pretty, non-ASCII, slash, 20.0"

# Where this scheme refuses a body that a sample's runtime would sign (docs/providers.md):
# the runtime signs a placeholder, or nests deeper than the gateway follows.
REFUSED = {
    ("float out of range", "node"): "Node signs the number as null",
    ("integer out of double range", "node"): "Node signs the number as null",
    ("top-level string", "php"): 'Laravel casts a scalar to ["payout"]',
    ("top-level string", "ruby"): "not an object or array",
    ("top-level null", "php"): "Laravel signs []",
    ("top-level null", "ruby"): "not an object or array",
    ("depth 512", "node"): "deeper than 511 levels",
    ("depth 513", "node"): "deeper than 511 levels",
}


def body_of(case: dict[str, Any]) -> bytes:
    return str(case["body"]).encode("utf-8")


def _params(signed_only: bool) -> list[Any]:
    return [
        pytest.param(case, rt, id=f"{rt}: {case['name']}")
        for case in VECTORS["cases"]
        for rt in RUNTIMES
        if not signed_only or "hmac" in case[rt]
    ]


def test_vectors_cover_what_the_issue_names() -> None:
    assert set(VECTORS["runtimes"]) == set(RUNTIMES)
    assert VECTORS["runtimes"]["php"].endswith("serialize_precision=-1")
    php = CASES["empty object"]["php"]["message"]
    assert '"meta":[]' in php  # {} after Laravel's decode to arrays
    assert '"a":20,' in CASES["zero fractions"]["php"]["message"]
    assert '"a":20.0,' in CASES["zero fractions"]["ruby"]["message"]
    assert "https:\\/\\/" in CASES["slashes"]["php"]["message"]
    assert '"url":"https://' in CASES["slashes"]["ruby"]["message"]
    assert all((name in CASES) for name, _ in REFUSED)


@pytest.mark.parametrize(("case", "runtime"), _params(signed_only=False))
def test_reserialisation_is_what_the_runtime_printed(case: dict[str, Any], runtime: str) -> None:
    """Byte for byte the runtime's message, or refused where the runtime fails (or where
    the gateway refuses on purpose: REFUSED)."""
    try:
        ours: bytes | None = WRITERS[runtime](parse(body_of(case)))
    except ValueError:
        ours = None
    result = case[runtime]
    if "message" in result and (case["name"], runtime) not in REFUSED:
        assert ours == str(result["message"]).encode("utf-8")
    else:
        assert ours is None


@pytest.mark.parametrize(("case", "runtime"), _params(signed_only=True))
def test_signature_made_by_the_runtime_verifies(case: dict[str, Any], runtime: str) -> None:
    """The runtime's HMAC, in the header its sample reads, passes; the reported mode is one
    whose runtime computed that same HMAC for this body."""
    headers = {HEADER[runtime]: case[runtime]["hmac"]}
    if (case["name"], runtime) in REFUSED:
        assert_rejected("justwallet", make_ctx([SECRET]), headers, body_of(case), "bad_signature")
        return
    result = verify("justwallet", make_ctx([SECRET]), headers, body_of(case))
    same = {
        MODE[rt]
        for rt in RUNTIMES
        if case[rt].get("hmac") == case[runtime]["hmac"] and HEADER[rt] == HEADER[runtime]
    }
    assert result.mode in same
    assert result.key_id == "SECRET_1"


@pytest.mark.parametrize(
    ("name", "runtime"),
    [
        (PAYOUT, "php"),
        ("empty object", "php"),
        ("zero fractions", "php"),
        ("nested empty arrays and objects", "php"),
        ("keys 0..n-1", "php"),
        (PAYOUT, "node"),
        (PAYOUT, "ruby"),
        ("zero fractions", "ruby"),
    ],
)
def test_issue_bodies_pass_in_the_mode_of_their_sample(name: str, runtime: str) -> None:
    case = CASES[name]
    assert case[runtime]["hmac"] != hmac_hex(SECRET, body_of(case))  # not the raw bytes
    headers = {HEADER[runtime]: case[runtime]["hmac"]}
    assert verify("justwallet", make_ctx([SECRET]), headers, body_of(case)).mode == MODE[runtime]


def test_token_in_signature_is_the_prose_mode() -> None:
    body = body_of(CASES[PAYOUT])
    result = verify("justwallet", make_ctx([SECRET]), {"Signature": SECRET}, body)
    assert (result.mode, result.key_id) == ("token", "SECRET_1")


NODE_HMAC = CASES[PAYOUT]["node"]["hmac"]
RUBY_HMAC = CASES[PAYOUT]["ruby"]["hmac"]
BODY = body_of(CASES[PAYOUT])


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        pytest.param(
            {"Webhook-Secret": SECRET}, BODY, "bad_signature", id="token in Webhook-Secret"
        ),
        pytest.param({"Signature": hmac_hex(SECRET, BODY)}, BODY, "bad_signature", id="raw bytes"),
        pytest.param({"Signature": NODE_HMAC.upper()}, BODY, "bad_signature", id="upper-case hex"),
        pytest.param(
            {"Webhook-Secret": NODE_HMAC}, BODY, "bad_signature", id="Node HMAC, Ruby header"
        ),
        pytest.param({"Signature": RUBY_HMAC}, BODY, "bad_signature", id="Ruby HMAC, Node header"),
        pytest.param(
            {"Signature": NODE_HMAC},
            BODY.replace(b"po_8a7f", b"po_0000"),
            "bad_signature",
            id="tampered body",
        ),
        pytest.param(
            {"Signature": NODE_HMAC}, BODY.replace(b"20.0", b"21.0"), "bad_signature", id="amount"
        ),
        pytest.param(
            {"Signature": hmac_hex(OTHER, BODY)}, BODY, "bad_signature", id="wrong secret, raw"
        ),
        pytest.param({"Signature": OTHER}, BODY, "bad_signature", id="wrong token"),
        pytest.param({"Signature": SECRET[:-1]}, BODY, "bad_signature", id="token prefix"),
        pytest.param({"Signature": ""}, BODY, "bad_signature", id="empty header"),
        pytest.param({"X-Other": SECRET}, BODY, "missing_header", id="missing header"),
        pytest.param(
            {"Signature": hmac_hex(SECRET, b"payout=1")},
            b"payout=1",
            "bad_signature",
            id="not JSON",
        ),
        pytest.param(
            {"Signature": "00" * 32}, b"[" * 100_000 + b"]" * 100_000, "bad_signature", id="deep"
        ),
    ],
)
def test_refused(headers: dict[str, str], body: bytes, reason: str) -> None:
    assert_rejected("justwallet", make_ctx([SECRET]), headers, body, reason)


def test_wrong_secret_for_every_sample() -> None:
    ctx = make_ctx([OTHER])
    for runtime in RUNTIMES:
        headers = {HEADER[runtime]: CASES[PAYOUT][runtime]["hmac"]}
        assert_rejected("justwallet", ctx, headers, BODY, "bad_signature")


def test_rotation_tries_every_secret() -> None:
    ctx = make_ctx([OTHER, SECRET])
    assert verify("justwallet", ctx, {"Signature": NODE_HMAC}, BODY).key_id == "SECRET_2"
    assert verify("justwallet", ctx, {"Webhook-Secret": RUBY_HMAC}, BODY).key_id == "SECRET_2"
    assert verify("justwallet", ctx, {"Signature": SECRET}, BODY).key_id == "SECRET_2"


@pytest.mark.parametrize(
    ("modes", "headers", "reason"),
    [
        (["token"], {"Signature": NODE_HMAC}, "bad_signature"),
        (["hmac-reserialized-node"], {"Signature": SECRET}, "bad_signature"),
        (["hmac-reserialized-node"], {"Signature": CASES[PAYOUT]["php"]["hmac"]}, "bad_signature"),
        (["hmac-reserialized-php"], {"Signature": CASES[PAYOUT]["php"]["hmac"]}, None),
        (["hmac-reserialized-ruby"], {"Signature": NODE_HMAC}, "missing_header"),
        (["token", "hmac-reserialized-node"], {"Webhook-Secret": RUBY_HMAC}, "missing_header"),
    ],
)
def test_modes_restrict(modes: list[str], headers: dict[str, str], reason: str | None) -> None:
    ctx = make_ctx([SECRET], {"modes": modes})
    if reason is None:
        assert verify("justwallet", ctx, headers, BODY).mode == modes[0]
    else:
        assert_rejected("justwallet", ctx, headers, BODY, reason)


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"modes": ["hmac-raw"]}, "verify.modes", "hmac-reserialized-ruby"),
        ({"modes": ["hmac-reserialized"]}, "verify.modes", "valid: token"),
        ({"modes": []}, "verify.modes", "non-empty"),
        ({"header": "X-Sig"}, "verify.header", "valid: modes"),
        ({"token_headers": ["Webhook-Secret"]}, "verify.token_headers", "valid: modes"),
    ],
)
def test_config_errors(options: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_verifier("justwallet", make_ctx([SECRET], options))
    assert info.value.key == f"sources.test.{key}"
    assert words in info.value.problem


# --------------------------------------------------------------------------- send

SEND_CASES = [case for case in VECTORS["cases"] if "sample_args" in case]


def justwallet_source(modes: list[str] | None = None) -> tuple[SourceSettings, BuildContext]:
    verify_table = f"[sources.jw.verify]\nmodes = {json.dumps(modes)}\n" if modes else ""
    text = f"""
[kafka]
"bootstrap.servers" = "127.0.0.1:9"
[sources.jw]
scheme = "justwallet"
secrets = ["JW_SECRET"]
{verify_table}"""
    settings = settings_from_toml(text, env={"JW_SECRET": SECRET})
    return settings.sources["jw"], verify_context(settings, "jw")


def test_send_samples_are_the_vector_bodies() -> None:
    assert {case["name"] for case in SEND_CASES} >= {
        "send: payout sample",
        "send: quote_creation.failed sample",
    }
    for case in SEND_CASES:
        assert sample_body("justwallet", **case["sample_args"]) == body_of(case)


@pytest.mark.parametrize("case", SEND_CASES, ids=[c["name"] for c in SEND_CASES])
def test_send_signs_as_every_sample_does(case: dict[str, Any]) -> None:
    """Its samples re-serialise the body to the same bytes, so the one Signature fits both
    the Node and the PHP sample, and Webhook-Secret fits the Ruby sample."""
    assert case["node"]["hmac"] == case["php"]["hmac"] == case["ruby"]["hmac"]
    body, headers = prepare(
        *justwallet_source(),
        event_type=case["sample_args"]["event_type"],
        event_id="evt_1",
        now=0.0,
        body=body_of(case),
    )
    assert body == body_of(case)
    assert headers == {
        "Signature": case["node"]["hmac"],
        "Webhook-Secret": case["ruby"]["hmac"],
        "content-type": "application/json",
    }


@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        (["hmac-reserialized-php"], {"Signature": CASES[PAYOUT]["php"]["hmac"]}),
        (["hmac-reserialized-ruby"], {"Webhook-Secret": RUBY_HMAC}),
        (["token"], {"Signature": SECRET}),
        (["token", "hmac-reserialized-node"], {"Signature": NODE_HMAC}),
    ],
)
def test_signer_follows_the_configured_modes(modes: list[str], expected: dict[str, str]) -> None:
    assert sign_request("justwallet", make_ctx([SECRET], {"modes": modes}), BODY, 0) == expected


@pytest.mark.parametrize("mode", ["token", *MODE.values()])
def test_signer_round_trip(mode: str) -> None:
    ctx = make_ctx([SECRET], {"modes": [mode]})
    headers = sign_request("justwallet", ctx, BODY, 0)
    assert build_verifier("justwallet", ctx).verify(req(headers, BODY), 0).mode == mode


def test_signer_refuses_a_body_no_sample_can_read() -> None:
    with pytest.raises(BridgeError, match="JSON object or array"):
        sign_request("justwallet", make_ctx([SECRET]), b"payout=1", 0)


def test_docs_list_exactly_the_accepted_modes() -> None:
    """docs/providers.md's "Accepted modes" table names each mode label, header and no other."""
    docs = (Path(__file__).parent.parent / "docs" / "providers.md").read_text(encoding="utf-8")
    table = docs.split("### Accepted modes", 1)[1].split("\n\n")[2]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    documented = {cell.strip(" `"): header.strip(" `") for cell, header in rows}
    assert documented == {mode.name: mode.header for mode in MODES}
