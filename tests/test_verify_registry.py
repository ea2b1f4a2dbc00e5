"""The scheme registry, plugins, `none`, and fuzzing every scheme with arbitrary input."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.verify import SCHEMES, SIGNERS, build_verifier, sign_request
from gateway.verify.base import REASONS, BuildContext, InboundRequest, VerifiedRequest, Verifier
from schemas.errors import ConfigError, VerificationError
from tests.verify_vectors import NOW, ec_key, make_ctx, req, write_jwks, write_pem_public

BUILT_IN = {"jiko", "justwallet", "jpmorgan", "fintoc", "standard-webhooks", "stripe", "github",
            "shopify", "slack", "hmac", "none"}  # fmt: skip


def test_all_built_ins_registered() -> None:
    assert set(SCHEMES) == BUILT_IN
    assert set(SIGNERS) == BUILT_IN


def test_unknown_scheme() -> None:
    with pytest.raises(ConfigError) as info:
        build_verifier("x", make_ctx(["s"]))
    assert info.value.key == "sources.test.scheme"
    assert "unknown scheme 'x'; choose one of: jiko," in info.value.problem


@pytest.mark.parametrize("scheme", sorted(BUILT_IN - {"none", "jpmorgan"}))
def test_missing_secrets(scheme: str) -> None:
    options = {"header": "X-Sig"} if scheme == "hmac" else {}
    with pytest.raises(ConfigError) as info:
        build_verifier(scheme, make_ctx([], options))
    assert info.value.key == "sources.test.secrets"


@pytest.mark.parametrize("scheme", sorted(BUILT_IN))
def test_unknown_option_everywhere(scheme: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_verifier(scheme, make_ctx(["whsec_c2VjcmV0"], {"bogus": 1}))
    assert info.value.key == "sources.test.verify.bogus"
    assert "valid:" in info.value.problem


def test_none_accepts_everything_and_signs_nothing() -> None:
    result = build_verifier("none", make_ctx()).verify(req({}, b"\xff"), NOW)
    assert (result.scheme, result.key_id) == ("none", None)
    assert sign_request("none", make_ctx(), b"x", NOW) == {}


class PluginVerifier:
    scheme = "plugin"

    def __init__(self, ctx: BuildContext) -> None:
        self.token = ctx.options.get("token", "")

    def verify(self, request: InboundRequest, now: float) -> VerifiedRequest:
        if request.headers.get("x-token") != self.token:
            raise VerificationError("bad_token")
        return VerifiedRequest(request, self.scheme)


def test_plugin_by_module_path() -> None:
    module = types.ModuleType("verify_plugin_for_tests")
    module.PluginVerifier = PluginVerifier  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        verifier = build_verifier(
            f"{module.__name__}:PluginVerifier", make_ctx(options={"token": "t"})
        )
        assert verifier.verify(req({"X-Token": "t"}, b""), NOW).scheme == "plugin"
        with pytest.raises(ConfigError, match="cannot sign"):
            sign_request(
                f"{module.__name__}:PluginVerifier", make_ctx(options={"token": "t"}), b"", 0
            )
    finally:
        del sys.modules[module.__name__]


@pytest.mark.parametrize("scheme", ["no_such_module_xyz:Thing", "schemas.errors:Nope", ":x"])
def test_plugin_import_errors(scheme: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_verifier(scheme, make_ctx())
    assert info.value.key == "sources.test.scheme"


# --- fuzz: any input ends in VerifiedRequest or VerificationError(reason in REASONS) ----------

HEADER_NAMES = [
    "x-jiko-signature", "signature", "webhook-secret", "key-id", "authorization",
    "x-customkey1", "fintoc-signature", "stripe-signature", "webhook-id", "webhook-timestamp",
    "webhook-signature", "svix-id", "svix-timestamp", "svix-signature", "x-hub-signature-256",
    "x-shopify-hmac-sha256", "x-slack-signature", "x-slack-request-timestamp", "x-sig", "x-ts",
    "x-id",
]  # fmt: skip
VALUE_PARTS = st.sampled_from(
    ["t=", "v1=", "v1,", "v1a,", "sha256=", "v0=", ",", " ", "=", "Bearer ", "1700000000",
     "-1", "AAAA", "====", "00ff", "ü", "\x00", "k-ec", "eyJhbGciOiJSUzI1NiJ9.e30.", "."]
)  # fmt: skip
HEADER_VALUES = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(VALUE_PARTS, st.text(max_size=8)), max_size=12).map("".join),
)
HEADERS = st.dictionaries(
    st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=10).map(str.lower)),
    HEADER_VALUES,
    max_size=8,
)
BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"{}", b'{"a": NaN}', b"[" * 5000, b'{"event.type": "payout"}', b'"\\ud800"']),
)


@pytest.fixture(scope="module")
def verifiers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Verifier]:
    d: Path = tmp_path_factory.mktemp("fuzz")
    key = ec_key()
    write_pem_public(d / "ec.pub.pem", key)
    write_jwks(d / "k.jwks", {"k-ec": key})
    secrets = ["whsec_c2VjcmV0LXNlY3JldA==", "1700000000"]
    options: dict[str, dict[str, Any]] = {
        "hmac": {"header": "x-sig", "format": "kv", "timestamp_header": "x-ts",
                 "id_header": "x-id", "template": "{id}.{timestamp}.{body}"},
        "jpmorgan": {
            "static_headers": {"x-customkey1": "FUZZ_TOKEN"},
            "jwt": {"jwks_file": str(d / "k.jwks"), "issuer": "i", "audience": "a",
                    "algorithms": ["ES256"]},
            "signature": {"keys": [{"id": "k-ec", "pem_file": str(d / "ec.pub.pem")}]},
        },
    }  # fmt: skip
    built = {
        name: build_verifier(name, make_ctx(secrets, options.get(name), {"FUZZ_TOKEN": "AAAA"}))
        for name in SCHEMES
    }
    for method in ("jwt", "signature"):  # reach each method without passing the static one
        only = {method: options["jpmorgan"][method]}
        built[f"jpmorgan-{method}"] = build_verifier("jpmorgan", make_ctx(options=only))
    return built


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=HEADERS, body=BODIES, now=st.sampled_from([NOW, 0.0, 1e12]))
def test_fuzz_only_verified_or_reason(
    verifiers: dict[str, Verifier], headers: dict[str, str], body: bytes, now: float
) -> None:
    for name, verifier in verifiers.items():
        try:
            result = verifier.verify(InboundRequest(headers=headers, body=body), now)
        except VerificationError as exc:
            assert exc.reason in REASONS, (name, exc.reason)
            # the detail names at most a header: bounded, one line (values are checked
            # not to leak in every vector test, see `assert_rejected`)
            assert len(str(exc)) < 120 and "\n" not in str(exc), name
        else:
            assert isinstance(result, VerifiedRequest)
            assert name == "none" or name.startswith("j") or result.key_id is not None
