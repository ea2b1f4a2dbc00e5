# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs the pinned dependencies when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= deploy/demo.toml

.PHONY: compile run test lint typecheck pytest bench compose clean install kafka-jars kafka-cluster registry-jars registry-jars-optional

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[embedded,test]'
	touch $(STAMP)

install: $(STAMP)

# The hot modules compiled with mypyc beside their sources (schemas/compiled.py); again
# whenever a source changed. Without a C compiler this says so and they run as Python.
COMPILED := $(VENV)/.compiled
$(COMPILED): $(STAMP) $(wildcard schemas/*.py gateway/*.py gateway/verify/*.py)
	@$(BIN)/python -m deploy.compile
	@touch $(COMPILED)

compile: $(COMPILED)

# Apache Kafka's jars (version pinned in deploy/kafka/pom.xml) into .cache/kafka/, once.
# Without Java 17+ or Maven this prints one line saying what is missing; `make run`
# and the tests then use the embedded broker.
kafka-jars: $(STAMP)
	@$(BIN)/python -m deploy.apache_kafka fetch --optional

# A three-node Apache Kafka cluster on loopback (first node on 9092), in the foreground.
kafka-cluster: $(STAMP) kafka-jars
	$(BIN)/webhook-bridge broker --engine apache --nodes 3

run: $(STAMP) $(COMPILED) kafka-jars
	$(BIN)/webhook-bridge up --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check gateway schemas consumers deploy tests
	$(BIN)/ruff format --check gateway schemas consumers deploy tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(COMPILED) tools kafka-jars registry-jars-optional
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP) $(COMPILED)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; } \
	  || { echo "bench: wrk is needed (Debian package wrk)"; exit 1; }
	$(BIN)/python -m tests.bench.run_all

compose:
	@command -v docker >/dev/null 2>&1 || { echo "compose: needs Docker with the compose plugin"; exit 1; }
	@for kind in provider sink; do f=deploy/compose/$$kind-secrets.env; test -f $$f || { \
	  python3 deploy/compose/make_secrets.py $$kind > $$f && echo "compose: wrote $$f with random secrets"; }; done
	docker compose -f deploy/compose/compose.yaml up --build -d

clean:
	-test -x $(BIN)/python && $(BIN)/python -m deploy.compile --clean
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .state .cache build

include deploy/tools.mk

# A Confluent-compatible Schema Registry for tests and local runs (docs/schema-registry.md):
# Apicurio Registry's built application, fetched from Maven Central by deploy/registry/pom.xml
# and unpacked into .cache/registry (gitignored). Offline once fetched (~/.m2 keeps it).
# Maven needs Java 17+; the registry itself runs on Java 21+ (deploy/schema_registry.py
# finds one: BRIDGE_SCHEMA_REGISTRY_JAVA, JAVA_HOME, java on PATH, /usr/lib/jvm/*).
REGISTRY_POM     := deploy/registry/pom.xml
REGISTRY_VERSION := $(shell sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' $(REGISTRY_POM))
REGISTRY_HOME    := .cache/registry/apicurio-registry-$(REGISTRY_VERSION)
REGISTRY_MVN     := mvn -B -q -C -Dstyle.color=never -f $(REGISTRY_POM) package
# Like deploy/tools.mk: once built, tests/test_schema_registry.py fails instead of skipping.
WB_TEST_REQUIRE_SCHEMA_REGISTRY ?= $(shell test -f $(REGISTRY_HOME)/quarkus-run.jar && echo 1)
export WB_TEST_REQUIRE_SCHEMA_REGISTRY

registry-jars:
	@command -v java >/dev/null 2>&1 || { echo "registry-jars: no java on PATH: Maven needs a JDK 17+ (Debian: openjdk-17-jdk-headless), the registry itself Java 21+"; exit 1; }
	@v=$$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p'); \
	  case "$$v" in 1.*|9|1[0-6]|"") echo "registry-jars: Java 17+ is needed for Maven, found '$$v' ($$(command -v java))"; exit 1;; esac
	@command -v mvn >/dev/null 2>&1 || { echo "registry-jars: Maven (mvn) is needed to fetch Apicurio Registry $(REGISTRY_VERSION) (Debian package maven)"; exit 1; }
	@test -f $(REGISTRY_HOME)/quarkus-run.jar || $(REGISTRY_MVN) -o >/dev/null 2>&1 || $(REGISTRY_MVN) \
	  || { echo "registry-jars: mvn could not fetch io.apicurio:apicurio-registry-app:$(REGISTRY_VERSION):tar.gz:all (see its output above)"; exit 1; }
	@test -f $(REGISTRY_HOME)/quarkus-run.jar || { echo "registry-jars: $(REGISTRY_HOME)/quarkus-run.jar missing after the build"; exit 1; }
	@echo "registry-jars: Apicurio Registry $(REGISTRY_VERSION) -> $(REGISTRY_HOME) (runs on Java 21+)"

# For `make test`: fetch the registry when this machine can; say why not otherwise (the
# registry tests then skip with that reason; once it is built they must run).
registry-jars-optional:
	@$(MAKE) --no-print-directory registry-jars || echo "registry-jars: not available here; the registry tests will say why"
