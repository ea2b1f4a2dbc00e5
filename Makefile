# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs the pinned dependencies when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= deploy/demo.toml

.PHONY: run test lint typecheck pytest bench compose clean install kafka-jars

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[embedded,test]'
	touch $(STAMP)

install: $(STAMP)

# Apache Kafka's jars (version pinned in deploy/kafka/pom.xml) into .cache/kafka/, once.
# Without Java 17+ or Maven this prints one line saying what is missing; `make run`
# and the tests then use the embedded broker.
kafka-jars: $(STAMP)
	@$(BIN)/python -m gateway.apache_kafka fetch --optional

run: $(STAMP) kafka-jars
	$(BIN)/webhook-bridge up --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check gateway schemas consumers tests
	$(BIN)/ruff format --check gateway schemas consumers tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) tools kafka-jars
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; } \
	  || { echo "bench: wrk is needed (Debian package wrk)"; exit 1; }
	$(BIN)/python -m tests.bench.run_all

compose:
	@command -v docker >/dev/null 2>&1 || { echo "compose: needs Docker with the compose plugin"; exit 1; }
	@test -f deploy/compose/secrets.env || { python3 deploy/compose/make_secrets.py > deploy/compose/secrets.env \
	  && echo "compose: wrote deploy/compose/secrets.env with random secrets"; }
	docker compose -f deploy/compose/compose.yaml up --build -d

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .state .cache

include deploy/tools.mk
