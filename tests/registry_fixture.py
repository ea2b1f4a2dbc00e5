"""Session fixture: one Confluent-compatible Schema Registry for every test that asks.

Import it into a test module (``from tests.registry_fixture import schema_registry``).

- ``SCHEMA_REGISTRY_URL`` set: that registry is used as it is (a Confluent Schema
  Registry's root URL, or an Apicurio's ``.../apis/ccompat/v7``). Tests use unique
  subject names, so a shared registry is fine.
- otherwise: Apicurio Registry (deploy/schema_registry.py) on a free loopback port,
  built on demand with `make registry-jars` (the first build downloads about 160 MB
  from Maven Central), stopped at the end of the session.

When no registry can be had (no Java 21+, no Maven, offline) the tests are skipped
with the reason, unless ``WB_TEST_REQUIRE_SCHEMA_REGISTRY=1``: then they fail. The
Makefile exports that once `make registry-jars` has built the registry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from deploy.schema_registry import RegistryError, SchemaRegistry

URL_ENV = "SCHEMA_REGISTRY_URL"
REQUIRE_ENV = "WB_TEST_REQUIRE_SCHEMA_REGISTRY"


@dataclass
class RegistryServer:
    url: str  # what bridge.schema_registry_url takes
    process: SchemaRegistry | None = None  # None for an existing registry


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[RegistryServer]:
    existing = os.environ.get(URL_ENV)
    if existing:
        yield RegistryServer(existing.rstrip("/"))
        return
    registry = SchemaRegistry(build=True)
    try:
        registry.start()
    except RegistryError as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"no Schema Registry ({REQUIRE_ENV}=1): {exc}", pytrace=False)
        pytest.skip(f"no Schema Registry: {exc}")
    try:
        yield RegistryServer(registry.url, registry)
    finally:
        registry.stop()
