from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway import sources
from gateway.sources import build_verifiers, verify_context
from schemas import config
from schemas.errors import ConfigError
from tests.support import DEMO_ENV, gateway_settings, settings_from_toml

REPO = Path(__file__).resolve().parent.parent
MINIMAL = """
[kafka]
"bootstrap.servers" = "127.0.0.1:9092"
[sources.jiko]
scheme = "jiko"
secrets = ["JIKO_WEBHOOK_SECRET"]
"""


def test_demo_config_loads() -> None:
    """deploy/demo.toml is what `make run` uses: it must parse with the real loader."""
    settings = config.load(REPO / "deploy" / "demo.toml", env=DEMO_ENV)
    assert {"jiko", "justwallet", "jpmorgan", "fintoc"} <= set(settings.sources)
    assert settings.sources["jiko"].secrets == ("JIKO_WEBHOOK_SECRET",)
    assert settings.kafka["bootstrap.servers"] == "127.0.0.1:9092"
    assert settings.gateway.port == 8000
    assert set(settings.sinks) == {"log", "demo-receiver"}


def test_defaults_and_frozen() -> None:
    settings = settings_from_toml(MINIMAL)
    source = settings.sources["jiko"]
    assert source.provider == "jiko"
    assert source.deadline_s == 2.5
    assert source.body_limit == 1_048_576
    assert source.dedup_horizon_s == 7 * 24 * 3600
    assert source.reorder_window_s == 5.0
    with pytest.raises(AttributeError):
        settings.gateway.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("toml_text", "key"),
    [
        (MINIMAL + "\n[gateway]\nprot = 1\n", "gateway.prot"),
        (MINIMAL + "\n[gateway]\nport = 'x'\n", "gateway.port"),
        (MINIMAL + "\n[gateway]\nport = 70000\n", "gateway.port"),
        (MINIMAL + "\n[gateway]\nbusy_poll_in_flight = -1\n", "gateway.busy_poll_in_flight"),
        (MINIMAL + "\n[bogus]\n", "bogus"),
        (MINIMAL.replace('scheme = "jiko"', 'scheme = "nope"'), "sources.jiko.scheme"),
        (MINIMAL.replace('scheme = "jiko"\n', ""), "sources.jiko.scheme"),
        (MINIMAL.replace("JIKO_WEBHOOK_SECRET", "UNSET_SECRET_VAR"), "sources.jiko.secrets"),
        (MINIMAL + 'colour = "red"\n', "sources.jiko.colour"),
        (MINIMAL + "success_status = 500\n", "sources.jiko.success_status"),
        (MINIMAL + "success_status = 204\n", "sources.jiko.success_status"),  # has a body
        (
            MINIMAL + '\n[sources.jw]\nscheme = "justwallet"\nsecrets = ["JIKO_WEBHOOK_SECRET"]\n'
            "success_status = 202\n",
            "sources.jw.success_status",
        ),
        (MINIMAL + '\n[kafka.producer]\nacks = "1"\n', "kafka.producer.acks"),
        (
            MINIMAL + '\n[kafka.producer]\n"enable.idempotence" = false\n',
            "kafka.producer.enable.idempotence",
        ),
        (MINIMAL + "body_limit = 0\n", "sources.jiko.body_limit"),
        (MINIMAL + '[sources.jiko.select]\nid = "a..b["\n', "sources.jiko.select.id"),
        (MINIMAL + "[sources.jiko.select]\nwhat = 'x'\n", "sources.jiko.select.what"),
        (MINIMAL.replace('"bootstrap.servers" = "127.0.0.1:9092"', ""), "kafka.bootstrap.servers"),
        (MINIMAL + '\n[sources.Bad]\nscheme = "jiko"\n', "sources.Bad"),
        (MINIMAL + '\n[sources.open]\nscheme = "none"\n', "sources.open.scheme"),
        (MINIMAL + '\n[sinks.x]\ntype = "log"\nproviders = []\n', "sinks.x.providers"),
        (
            MINIMAL + '\n[sinks.x]\ntype = "log"\n[sinks.x.retry]\nmax_attempts = 0\n',
            "sinks.x.retry.max_attempts",
        ),
        (MINIMAL + '\n[bridge]\nlog_level = "loud"\n', "bridge.log_level"),
    ],
)
def test_invalid_config_names_the_key(toml_text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        gateway_settings(toml_text)
    assert info.value.key == key
    message = str(info.value)
    assert message.startswith(f"config error: {key}: ")
    assert "\n" not in message


def test_missing_secret_error_names_variable_not_value() -> None:
    with pytest.raises(ConfigError) as info:
        gateway_settings(MINIMAL, env={})
    assert "JIKO_WEBHOOK_SECRET" in str(info.value)


def test_the_config_is_data_and_reads_no_secret() -> None:
    """Loading names the secrets and reads none: a process that never verifies a webhook
    (compactor, reorderer, fan-out) starts without any provider secret."""
    settings = settings_from_toml(MINIMAL, env={})
    assert settings.sources["jiko"].secrets == ("JIKO_WEBHOOK_SECRET",)
    with pytest.raises(ConfigError, match="JIKO_WEBHOOK_SECRET is not set"):
        build_verifiers(settings)


def test_unknown_key_lists_valid_choices() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_toml(MINIMAL + "\n[gateway]\nprot = 1\n")
    assert "port" in info.value.problem and "deadline_s" in info.value.problem


def test_environment_twins_override_the_file() -> None:
    env = {
        **DEMO_ENV,
        "BRIDGE_GATEWAY_PORT": "9000",
        "BRIDGE_SOURCES_JIKO_DEADLINE_S": "1.5",
        "BRIDGE_BRIDGE_TOPIC_PREFIX": "acme",
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": "broker:9093",
        "BRIDGE_KAFKA_PRODUCER_LINGER_MS": "7",
        "BRIDGE_SOURCES_JIKO_SELECT_ORDERING_KEY": "payload.card_id",
    }
    settings = settings_from_toml(MINIMAL, env)
    assert settings.gateway.port == 9000
    assert settings.sources["jiko"].deadline_s == 1.5
    assert settings.bridge.topic_prefix == "acme"
    assert settings.kafka["bootstrap.servers"] == "broker:9093"
    assert settings.producer_config()["linger.ms"] == "7"
    key_selector = settings.sources["jiko"].selectors.ordering_key
    assert key_selector is not None and key_selector.text == "payload.card_id"


def test_a_bridge_variable_that_names_no_setting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + '\n[sinks.hook]\ntype = "log"\n')
    fine = {
        **DEMO_ENV,
        "BRIDGE_GATEWAY_PORT": "9000",  # every kind of twin the loader reads
        "BRIDGE_REORDERER_WINDOW_S": "1",
        "BRIDGE_FANOUT_INSTANCE_ID": "pod-1",
        "BRIDGE_SOURCES_JIKO_SELECT_ID": "id",
        "BRIDGE_SINKS_HOOK_RETRY_MAX_ATTEMPTS": "3",
        "BRIDGE_KAFKA_SOCKET_TIMEOUT_MS": "100",  # librdkafka's business
        "BRIDGE_CONFIG": "elsewhere.toml",
    }
    assert config.load(path, fine).gateway.port == 9000
    for typo in ("BRIDGE_GATEWAY_PROT", "BRIDGE_SOURCES_JICO_DEADLINE_S", "BRIDGE_SINKS_HOOK_URL"):
        with pytest.raises(ConfigError) as info:
            config.load(path, {**fine, typo: "1"})
        assert info.value.key == typo
        assert "names no setting" in str(info.value)


def test_bad_environment_twin_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_toml(MINIMAL, {**DEMO_ENV, "BRIDGE_GATEWAY_PORT": "eighty"})
    assert info.value.key == "gateway.port"
    assert "BRIDGE_GATEWAY_PORT" in info.value.problem


def test_librdkafka_keys_pass_through() -> None:
    text = MINIMAL.replace(
        '"bootstrap.servers" = "127.0.0.1:9092"',
        '"bootstrap.servers" = "k:9092"\n"security.protocol" = "SASL_SSL"\n'
        '"socket.keepalive.enable" = true\n[kafka.consumer]\n"fetch.min.bytes" = 10',
    )
    settings = settings_from_toml(text)
    assert settings.producer_config()["security.protocol"] == "SASL_SSL"
    assert settings.producer_config()["socket.keepalive.enable"] == "true"
    assert settings.consumer_config()["fetch.min.bytes"] == "10"
    assert "fetch.min.bytes" not in settings.producer_config()


def test_secret_files_and_rotation(tmp_path: Path) -> None:
    (tmp_path / "old.secret").write_text("old-secret-0123456789\n")
    text = MINIMAL.replace(
        'secrets = ["JIKO_WEBHOOK_SECRET"]',
        'secrets = ["JIKO_WEBHOOK_SECRET"]\nsecret_files = ["old.secret"]',
    )
    path = tmp_path / "c.toml"
    path.write_text(text)
    settings = config.load(path, env=DEMO_ENV)
    secrets = verify_context(settings, "jiko").secrets
    assert [s.key_id for s in secrets] == ["JIKO_WEBHOOK_SECRET", "old.secret"]
    assert "old-secret" not in repr(settings.sources["jiko"])


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    text = MINIMAL + 'secret_files = ["missing.secret"]\n'
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        build_verifiers(config.load(path, env=DEMO_ENV))
    assert info.value.key == "sources.jiko.secret_files"
    assert "missing.secret" in info.value.problem


def test_unverified_source_needs_explicit_opt_in() -> None:
    settings = settings_from_toml(
        MINIMAL + '\n[sources.open]\nscheme = "none"\nallow_unverified = true\n'
    )
    assert settings.sources["open"].allow_unverified


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)


def test_cli_reports_config_error_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deploy.cli import main

    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + "\n[gateway]\nprot = 1\n")
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: gateway.prot: unknown key")
    assert len(err.splitlines()) == 1


def test_demo_config_is_valid_toml_without_secrets_in_it() -> None:
    raw = tomllib.loads((REPO / "deploy" / "demo.toml").read_text())
    for source in raw["sources"].values():
        for name in source.get("secrets", []):
            assert name.isupper() and name.endswith("_SECRET")


def test_check_config_validates_sink_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deploy.cli import main

    for key, value in DEMO_ENV.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "c.toml"
    path.write_text(
        MINIMAL + '\n[sinks.ledger]\ntype = "http"\nurl = "http://x/"\n'
        'secret = "DEMO_RECEIVER_SECRET"\ncolour = "red"\n'
    )
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith("config error: sinks.ledger.colour")
    path.write_text(
        MINIMAL + '\n[sinks.ledger]\ntype = "http"\nurl = "http://x/"\n'
        'secret = "DEMO_RECEIVER_SECRET"\n'
    )
    assert main(["check-config", "--config", str(path)]) == 0


def test_key_files_resolve_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    (tmp_path / "keys").mkdir()
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "keys" / "k1.pem").write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    path = tmp_path / "c.toml"
    path.write_text(
        MINIMAL
        + """
[sources.jpm]
scheme = "jpmorgan"
[sources.jpm.verify]
methods = ["signature"]
[sources.jpm.verify.signature]
keys = [{ id = "k1", pem_file = "keys/k1.pem" }]
"""
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert build_verifiers(config.load(path, env=DEMO_ENV))["jpm"].scheme == "jpmorgan"
    path.write_text(path.read_text().replace("keys/k1.pem", "keys/missing.pem"))
    with pytest.raises(ConfigError) as info:
        build_verifiers(config.load(path, env=DEMO_ENV))
    assert "pem_file" in info.value.key


# --------------------------------------------------------------------------- provider rules


def jpmorgan_source(extra: str = "") -> str:
    return f"""
[sources.jpm]
scheme = "jpmorgan"
{extra}
[sources.jpm.verify]
methods = ["static-headers"]
static_headers = {{ "X-Custom-Key" = "JPMORGAN_WEBHOOK_SECRET" }}
"""


@pytest.mark.parametrize(
    ("toml_text", "env", "key", "problem"),
    [
        (
            MINIMAL,
            {"JIKO_WEBHOOK_SECRET": "five5"},
            "sources.jiko.secrets",
            "JIKO_WEBHOOK_SECRET is shorter than 16 characters",
        ),
        (
            MINIMAL,
            {"JIKO_WEBHOOK_SECRET": "x" * 15},
            "sources.jiko.secrets",
            "JIKO_WEBHOOK_SECRET is shorter than 16 characters",
        ),
        (
            MINIMAL + jpmorgan_source("deadline_s = 3.0"),
            DEMO_ENV,
            "sources.jpm.deadline_s",
            "must be below 3.0 (is 3.0): jpmorgan counts an answer after 3 s as a failure",
        ),
        (
            MINIMAL + jpmorgan_source("deadline_s = 5"),
            DEMO_ENV,
            "sources.jpm.deadline_s",
            "must be below 3.0 (is 5.0)",
        ),
        (
            MINIMAL + "\n[gateway]\ndeadline_s = 3.5\n" + jpmorgan_source(),
            DEMO_ENV,
            "sources.jpm.deadline_s",
            "(is 3.5, from gateway.deadline_s)",
        ),
        (
            MINIMAL + jpmorgan_source(),
            {**DEMO_ENV, "BRIDGE_SOURCES_JPM_DEADLINE_S": "4"},
            "sources.jpm.deadline_s",
            "must be below 3.0 (is 4.0)",
        ),
        (
            MINIMAL + jpmorgan_source("dedup_horizon_s = 86400"),
            DEMO_ENV,
            "sources.jpm.dedup_horizon_s",
            "must be at least 259200 (is 86400): jpmorgan resends a notification for up to 72 h",
        ),
        (
            MINIMAL + "\n[compactor]\ndedup_horizon_s = 3600\n" + jpmorgan_source(),
            DEMO_ENV,
            "sources.jpm.dedup_horizon_s",
            "(is 3600, from compactor.dedup_horizon_s)",
        ),
    ],
)
def test_config_refuses_what_the_provider_rules_out(
    toml_text: str, env: dict[str, str], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        gateway_settings(toml_text, env=env)
    assert info.value.key == key
    assert problem in info.value.problem
    assert "\n" not in str(info.value)
    assert env.get("JIKO_WEBHOOK_SECRET", "") not in str(info.value)  # never the secret


def test_provider_limits_accept_what_the_provider_allows() -> None:
    text = MINIMAL + jpmorgan_source("deadline_s = 2.99\ndedup_horizon_s = 259200")
    text += '\n[sources.jw]\nscheme = "justwallet"\nsecrets = ["JW_SECRET"]\n'
    env = {**DEMO_ENV, "JIKO_WEBHOOK_SECRET": "x" * 16, "JW_SECRET": "five5"}
    settings = settings_from_toml(text, env=env)
    assert settings.sources["jpm"].deadline_s == 2.99
    assert settings.sources["jpm"].dedup_horizon_s == 259200
    assert [s.key_id for s in verify_context(settings, "jw").secrets] == ["JW_SECRET"]


def test_jiko_secret_file_length_is_checked(tmp_path: Path) -> None:
    (tmp_path / "jiko.key").write_text("short\n")
    path = tmp_path / "c.toml"
    path.write_text(
        MINIMAL.replace('secrets = ["JIKO_WEBHOOK_SECRET"]', 'secret_files = ["jiko.key"]')
    )
    with pytest.raises(ConfigError) as info:
        build_verifiers(config.load(path, env={}))
    assert info.value.key == "sources.jiko.secret_files"
    assert info.value.problem.startswith("jiko.key is shorter than 16 characters")


def test_check_config_refuses_a_short_jiko_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deploy.cli import main

    monkeypatch.setenv("JIKO_WEBHOOK_SECRET", "five5")
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL)
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "config error: sources.jiko.secrets: JIKO_WEBHOOK_SECRET is shorter than 16 "
        "characters, the least this provider allows"
    )


def test_docs_state_the_provider_rules() -> None:
    docs = (REPO / "docs" / "providers.md").read_text(encoding="utf-8")
    assert sources.SECRET_MIN_CHARS == {"jiko": 16}
    assert "at least 16 characters" in docs
    assert config.ANSWER_WITHIN_S == {"jpmorgan": 3.0}
    assert "the rule is `deadline_s < 3.0`" in docs
    assert config.RESENDS_FOR_S == {"jpmorgan": 259200.0}
    assert "`dedup_horizon_s` under 259200 (72 h)" in docs


# --------------------------------------------------------------------------- record size


def test_producers_and_envelope_topics_fit_the_largest_envelope() -> None:
    from schemas.sizes import record_limits
    from schemas.topics import implied_topics

    settings = settings_from_toml(MINIMAL)  # body_limit 1 MiB: more than librdkafka's 1 MB
    need = record_limits(settings)
    assert need.body_limit == 1_048_576 and need.batch > 1_048_576
    assert int(settings.producer_config()["message.max.bytes"]) == need.batch
    by_name = {spec.name: spec.config for spec in implied_topics(settings)}
    for name in (
        "webhooks.jiko",
        "webhooks.jiko.unique",
        "webhooks.jiko.ordered",
        "webhooks.jiko.reorder-state",
        "webhooks.quarantine",
    ):
        assert by_name[name]["max.message.bytes"] == str(need.batch), name
    assert "max.message.bytes" not in by_name["webhooks.jiko.dedup-state"]  # ids only


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('[kafka.producer]\n"message.max.bytes" = 1000000\n', "kafka.producer.message.max.bytes"),
        ('"message.max.bytes" = 1000000\n', "kafka.message.max.bytes"),
        ('[topics.config]\n"max.message.bytes" = "1048588"\n', "topics.config.max.message.bytes"),
    ],
)
def test_a_body_limit_whose_envelope_would_not_fit_is_refused(extra: str, key: str) -> None:
    text = MINIMAL.replace("[sources.jiko]", extra + "[sources.jiko]")
    if extra.startswith('"message'):  # a [kafka] key: it goes under [kafka]
        text = MINIMAL.replace('"bootstrap.servers"', extra + '"bootstrap.servers"')
    with pytest.raises(ConfigError) as caught:
        settings_from_toml(text)
    assert caught.value.key == key
    assert "sources.jiko.body_limit = 1048576" in str(caught.value)
    # the same settings take a body limit whose envelope fits
    settings_from_toml(text.replace('scheme = "jiko"', 'scheme = "jiko"\nbody_limit = 900000'))


def test_a_body_limit_beyond_any_kafka_client_is_refused() -> None:
    with pytest.raises(ConfigError, match="too large") as caught:
        settings_from_toml(MINIMAL + "body_limit = 2000000000\n")
    assert caught.value.key == "sources.jiko.body_limit"


# --------------------------------------------------------------------------- check-config

SINK = """[sinks.ledger]
type = "http"
url = "http://receiver.internal:8100/events"
secret = "DEMO_RECEIVER_SECRET"
"""


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (("receiver.internal:8100", "receiver.internal:99999"), "sinks.ledger.url", "port must"),
        (("receiver.internal:8100", "receiver.internal:0"), "sinks.ledger.url", "port must"),
        (("receiver.internal:8100", "receiver internal:8100"), "sinks.ledger.url", "host name"),
        (("http://receiver", "ftp://receiver"), "sinks.ledger.url", "http:// or https://"),
        (("http://receiver.internal:8100/events", "/events"), "sinks.ledger.url", "absolute"),
        (("[sinks.ledger]", "[sinks.ledger]\ntimeout_s = -1"), "sinks.ledger.timeout_s", ""),
        (
            ("[sinks.ledger]", "[sinks.ledger]\nmax_connections = 0"),
            "sinks.ledger.max_connections",
            "",
        ),
        (
            ("[sinks.ledger]", "[sinks.ledger.retry]\ninitial_backoff_s = 0\n[sinks.ledger]"),
            "sinks.ledger.retry.initial_backoff_s",
            "positive",
        ),
        (("[sinks.ledger]", "[gateway]\nport = 70000\n[sinks.ledger]"), "gateway.port", "65535"),
        (
            ("[sinks.ledger]", "[compactor]\nmetrics_port = 70000\n[sinks.ledger]"),
            "compactor.metrics_port",
            "65535",
        ),
        (
            ("[sinks.ledger]", '[fanout]\nmetrics_host = "a b"\n[sinks.ledger]'),
            "fanout.metrics_host",
            "without spaces",
        ),
        (
            ("[sinks.ledger]", "[gateway]\nbody_timeout_s = 0.0\n[sinks.ledger]"),
            "gateway.body_timeout_s",
            "positive",
        ),
        (("127.0.0.1:9092", "127.0.0.1:99999"), "kafka.bootstrap.servers", "65535"),
        (
            (
                "[sinks.ledger]",
                '[bridge]\nschema_registry_url = "http://reg:99999"\n[sinks.ledger]',
            ),
            "bridge.schema_registry_url",
            "port must",
        ),
        (('scheme = "jiko"', 'scheme = "jiko"\ndeadline_s = 0'), "sources.jiko.deadline_s", ""),
        (
            ('scheme = "jiko"', 'scheme = "jiko"\nreorder_window_s = -1.0'),
            "sources.jiko.reorder_window_s",
            "zero or more",
        ),
    ],
)
def test_check_config_names_every_bad_value_in_one_line(
    change: tuple[str, str],
    key: str,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from deploy.cli import main

    for name, value in DEMO_ENV.items():
        monkeypatch.setenv(name, value)
    good = MINIMAL + SINK
    path = tmp_path / "c.toml"
    path.write_text(good)
    assert main(["check-config", "--config", str(path)]) == 0
    capsys.readouterr()
    old, new = change
    assert old in good
    path.write_text(good.replace(old, new, 1))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"config error: {key}: "), err
    assert problem in err
