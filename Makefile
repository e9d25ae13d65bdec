# One way to run things. `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The roadmap's bar: line and branch coverage of pipeline/, child processes included.
COVERAGE_MIN ?= 95

.PHONY: setup demo test lint typecheck security unit clean prometheus toxiproxy clients helm container-tools image

$(STAMP): pyproject.toml setup.py pipeline/ts/_gorilla.c pipeline/ts/_jsonscan.c clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -e clients/python
	touch $(STAMP)

setup: $(STAMP)

## Bring up a local broker, topics and a worker; stream a sample load; print stats.
demo: setup
	$(BIN)/themis demo

lint: setup
	$(BIN)/ruff check pipeline tests clients/python examples/python
	$(BIN)/ruff format --check pipeline tests clients/python examples/python

typecheck: setup
	$(BIN)/mypy

## The prometheus binary the scrape test runs (Debian's package, installed if missing).
prometheus:
	scripts/ensure-prometheus.sh

## The SDKs' own dependencies: Go modules, npm packages (lockfile), the TypeScript build,
## and staticcheck (built once with Go).
clients:
	cd clients/go && go mod download
	scripts/ensure-staticcheck.sh >/dev/null
	npm ci --prefix clients/typescript --no-audit --no-fund --loglevel=error
	npm run build --prefix clients/typescript

## The toxiproxy-server the fault tests put between components (built once with Go).
toxiproxy:
	scripts/ensure-toxiproxy.sh >/dev/null

## Helm 3.22.0 for the chart test (built once with Go into the cache).
helm:
	scripts/ensure-helm.sh >/dev/null

## podman, buildah, runc and mmdebstrap for the image and container-broker tests (apt, if missing).
container-tools:
	scripts/ensure-container-tools.sh

## The pipeline's OCI image (podman, cached under THEMIS_HOME); prints its name.
image: setup container-tools
	scripts/build-image.sh pipeline

## Every high-severity finding of bandit fails the run.
security: setup
	$(BIN)/bandit -q -r pipeline clients/python/src --severity-level high

## Lint, type-check, scan, then every test against a real broker (started here if none
## is given) under coverage, child processes included; fails under COVERAGE_MIN %.
test: lint typecheck security prometheus toxiproxy clients helm container-tools
	rm -rf var/coverage && mkdir -p var/coverage
	$(BIN)/coverage run -m pytest --junitxml=var/junit.xml; echo $$? > var/pytest.rc
	$(BIN)/coverage combine -q
	@$(BIN)/python -c "import xml.etree.ElementTree as E; s=E.parse('var/junit.xml').getroot().find('testsuite'); t,f,e,k=(int(s.get(a)) for a in ('tests','failures','errors','skipped')); print(f'{t-f-e-k} passed, {f+e} failed, {k} skipped')"
	@$(BIN)/coverage report --fail-under=$(COVERAGE_MIN) > var/coverage.txt; rc=$$?; \
	  tail -n 25 var/coverage.txt; \
	  echo "coverage (lines and branches, child processes included): $$($(BIN)/coverage report --format=total)% (at least $(COVERAGE_MIN)%)"; \
	  test "$$(cat var/pytest.rc)" = 0 && exit $$rc || exit 1

unit: setup
	$(BIN)/pytest -m unit

clean:
	rm -rf $(VENV) build *.egg-info pipeline/ts/*.so var
