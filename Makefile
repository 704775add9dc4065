# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# checkov cannot share the lock (it pins packaging<24): its own venv, pinned by infra/checkov-requirements.txt.
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp
# jsii (the AWS CDK's bridge to Node) prints a banner on Node 20 for every process; keep CI output readable.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION := 1
export CKV_SKIP_PACKAGE_UPDATE_CHECK := true
# The runtime core, the four services, the developer tools and the AWS CDK app, each its own distribution
# (docs/deploy.md).
PROJECTS := -e . -e services/ingest -e services/orchestrator -e services/monitor -e services/serving -e tools -e infra

.PHONY: install run up test test-unit test-contract test-integration test-e2e test-fault test-deploy test-infra infra checkov bench lint fmt tools clean

$(STAMP): pyproject.toml services/*/pyproject.toml tools/pyproject.toml infra/pyproject.toml constraints.txt
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

$(CHECKOV_STAMP): infra/checkov-requirements.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q -r infra/checkov-requirements.txt
	@touch $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)

# The AWS CDK app (infra/): synthesize with cdk-nag into .flywheel/cdk.out/, then its offline checks (docs/deploy.md).
infra: install checkov
	$(PY) -m flywheel_infra.app .flywheel/cdk.out --nag
	$(PY) -m pytest -m infra tests/infra $(PYTEST_ARGS)

# Run the platform on the embedded default: local stack, four services, the demo scenario.
run: install
	$(PY) -m flywheel demo $(ARGS)

# Start the stack and the four idle services until Ctrl-C.
up: install
	$(PY) -m flywheel up $(ARGS)

test: install tools checkov
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
test-infra: install checkov
	$(PY) -m pytest -m infra tests/infra $(PYTEST_ARGS)

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
