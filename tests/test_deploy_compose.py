"""deploy/compose: the compose file against the Compose Specification schema, plus
the wiring a schema cannot see (images pinned, health-gated start-up, ports, config).

The schema is the one the docker-compose 1.29.2 wheel ships, extracted by `make tools`;
without it that one test is skipped with the reason (or fails when
WB_TEST_REQUIRE_COMPOSE_SPEC is set). No Docker engine: nothing is started.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.deploy_support import (
    COMPOSE_CONFIG,
    COMPOSE_DIR,
    COMPOSE_FILE,
    DEMO_CONFIG,
    PROMETHEUS_CONFIG,
    ROOT,
    compose_spec_path,
    dummy_env,
    load_yaml,
    require_tool,
    secret_env_names,
)

BRIDGE_PROCESSES = {"gateway": 8000, "compactor": 9101, "reorderer": 9102, "fanout": 9103}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


def test_compose_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    import jsonschema

    path = compose_spec_path()
    require_tool("Compose Specification schema", path, "WB_TEST_REQUIRE_COMPOSE_SPEC")
    assert path is not None
    schema = json.loads(path.read_text(encoding="utf-8"))
    # compose_spec.json names its draft as "http://json-schema.org/draft/2019-09/schema#",
    # which jsonschema does not recognise by that spelling.
    declared = str(schema.get("$schema", ""))
    validator_class = (
        jsonschema.Draft201909Validator
        if "2019-09" in declared
        else jsonschema.validators.validator_for(schema)
    )
    errors = sorted(validator_class(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)
    # The schema is strict enough to catch a typo.
    broken = {**compose, "services": {"x": {"image": "a:1", "helthcheck": {}}}}
    assert list(validator_class(schema).iter_errors(broken))


def test_services_and_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {"kafka", "schema-registry", "topics", "prometheus", "grafana", *BRIDGE_PROCESSES}
    assert expected <= set(services)
    for name, service in services.items():
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: image {image!r} not pinned"
        assert not image.endswith(":latest"), name
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_kafka_is_a_single_kraft_node_that_allows_transactions(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_bridge_services_build_the_one_image(compose: dict[str, Any]) -> None:
    for name in ("topics", *BRIDGE_PROCESSES):
        service = compose["services"][name]
        build = service["build"]
        assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
        assert build["dockerfile"] == "deploy/Dockerfile"
        assert service["command"][0] == name
        assert service["command"][1:] == ["--config", "/etc/webhook-bridge/config.toml"]
        # each process gets only the secrets it uses: providers' to the gateway, sinks'
        # to the fan-out, none to the topics job and the stages
        wanted = {"gateway": "provider-secrets.env", "fanout": "sink-secrets.env"}.get(name)
        assert service.get("env_file") == wanted, name
        assert "./config.toml:/etc/webhook-bridge/config.toml:ro" in service["volumes"]
        assert service.get("read_only") is True


def test_start_up_is_gated_on_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    built = {name for name, s in services.items() if "build" in s}
    for name, service in services.items():
        for target, dep in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if dep["condition"] == "service_healthy":
                # Our image has a HEALTHCHECK; anything else needs one in compose.
                check = services[target].get("healthcheck", {})
                assert not check.get("disable"), f"{target} has its healthcheck disabled"
                assert check.get("test") or target in built, f"{target} has no healthcheck"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, port in BRIDGE_PROCESSES.items():
        condition = services[name]["depends_on"]["topics"]["condition"]
        assert condition == "service_completed_successfully", name
        assert services[name]["environment"]["HEALTHCHECK_PORT"] == str(port)


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} missing"


def test_prometheus_scrapes_every_process_on_its_port() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    for name, port in BRIDGE_PROCESSES.items():
        assert f"{name}:{port}" in targets


SECTION_OF = {"provider": ("sources",), "sink": ("sinks",)}


@pytest.mark.parametrize("kind", ["provider", "sink"])
def test_secrets_examples_cover_every_secret_with_placeholders(kind: str) -> None:
    example = (COMPOSE_DIR / f"{kind}-secrets.env.example").read_text(encoding="utf-8")
    values = dict(
        line.split("=", 1)
        for line in example.splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(values) == set(secret_env_names(COMPOSE_CONFIG, SECTION_OF[kind]))
    for name, value in values.items():
        assert "replace" in value.lower() or "UkVQTEFDRS1NRS" in value, f"{name}: not a placeholder"
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8")
    assert "deploy/compose/*secrets.env" in ignored, "real secrets files must be git-ignored"


def test_make_secrets_gives_every_secret_a_fresh_value_the_config_accepts() -> None:
    import subprocess
    import sys

    from gateway.sources import build_verifiers
    from schemas.config import load

    def generate(kind: str) -> dict[str, str]:
        out = subprocess.run(
            [sys.executable, str(COMPOSE_DIR / "make_secrets.py"), kind],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if not line.startswith("#"))

    providers, sinks = generate("provider"), generate("sink")
    assert set(providers) == set(secret_env_names(COMPOSE_CONFIG, ("sources",)))
    assert set(sinks) == set(secret_env_names(COMPOSE_CONFIG, ("sinks",)))
    again = generate("provider")
    assert all(providers[name] != again[name] for name in providers), "values must be random"
    assert all("replace" not in value.lower() for value in {**providers, **sinks}.values())
    # the gateway's sources start with the provider file alone (whsec_ keys decode)
    assert build_verifiers(load(COMPOSE_CONFIG, env=providers))


def test_compose_config_parses_and_points_at_compose_services() -> None:
    from schemas.config import load

    settings = load(COMPOSE_CONFIG, env=dummy_env(COMPOSE_CONFIG))
    demo = load(DEMO_CONFIG, env=dummy_env(DEMO_CONFIG))
    assert settings.kafka["bootstrap.servers"] == "kafka:9092"
    assert settings.bridge.schema_registry_url == "http://schema-registry:8081"
    assert settings.gateway.host == "0.0.0.0"
    for stage in (settings.compactor, settings.reorderer, settings.fanout):
        assert stage.metrics_host == "0.0.0.0"
    assert (settings.gateway.port, settings.compactor.metrics_port) == (8000, 9101)
    assert (settings.reorderer.metrics_port, settings.fanout.metrics_port) == (9102, 9103)
    assert set(settings.sources) == set(demo.sources)
    assert set(settings.sinks) == set(demo.sinks)
