# One way to run things. `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit clean prometheus

$(STAMP): pyproject.toml setup.py pipeline/ts/_gorilla.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

## Bring up a local broker, topics and a worker; stream a sample load; print stats.
demo: setup
	$(BIN)/themis demo

lint: setup
	$(BIN)/ruff check pipeline tests
	$(BIN)/ruff format --check pipeline tests

typecheck: setup
	$(BIN)/mypy

## The prometheus binary the scrape test runs (Debian's package, installed if missing).
prometheus:
	scripts/ensure-prometheus.sh

## Lint, type-check, then every test against a real broker (started here if none is given).
test: lint typecheck prometheus
	$(BIN)/pytest --junitxml=var/junit.xml
	@$(BIN)/python -c "import xml.etree.ElementTree as E; s=E.parse('var/junit.xml').getroot().find('testsuite'); t,f,e,k=(int(s.get(a)) for a in ('tests','failures','errors','skipped')); print(f'{t-f-e-k} passed, {f+e} failed, {k} skipped')"

unit: setup
	$(BIN)/pytest -m unit

clean:
	rm -rf $(VENV) build *.egg-info pipeline/ts/*.so var
