# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The runtime core, the three services and the developer tools, each its own distribution (docs/deploy.md).
PROJECTS := -e . -e services/ingest -e services/orchestrator -e services/monitor -e tools

.PHONY: install run up test test-unit test-contract test-integration test-e2e test-fault test-deploy bench lint fmt tools clean

$(STAMP): pyproject.toml services/*/pyproject.toml tools/pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt $(PROJECTS)
	@touch $(STAMP)

install: $(STAMP)

# Debian's prometheus (server + promtool) for the monitor's rule and dashboard tests.
tools:
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@command -v promtool >/dev/null && echo "promtool: $$(promtool --version 2>&1 | head -1)"

# Run the platform on the embedded default: local stack, three services, the demo scenario.
run: install
	$(PY) -m flywheel demo $(ARGS)

# Start the stack and the three idle services until Ctrl-C.
up: install
	$(PY) -m flywheel up $(ARGS)

test: install tools
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m unit $(PYTEST_ARGS)
test-contract: install
	$(PY) -m pytest -m contract $(PYTEST_ARGS)
test-integration: install tools
	$(PY) -m pytest -m integration $(PYTEST_ARGS)
test-e2e: install
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)
test-fault: install
	$(PY) -m pytest -m fault $(PYTEST_ARGS)
test-deploy: install tools
	$(PY) -m pytest -m deploy $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(ARGS)

lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m ruff format --check .

fmt: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .flywheel .pytest_cache .hypothesis
