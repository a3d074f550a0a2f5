# kernelscope: `make run` sets everything up and runs the main job; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kernelscope-installed
# pytest-xdist workers for `make test`: much of the suite waits on servers and subprocesses.
TEST_WORKERS ?= 2

# Project-local homes and quiet defaults for the tools (see infra/kernelscope.env).
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 60
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1
export NO_MKDOCS_2_WARNING ?= 1
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test test-fast lint docs docs-serve repro push pull remote-status ui ui-start ui-stop ui-status mlflow-ui browser clean

setup: $(STAMP)

# Reinstalls only when the pins or the package metadata change; a second call is a no-op.
$(STAMP): requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml infra/pip_check.py
	@echo "Setting up $(VENV) (first time: about 2 minutes)..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install -qq --no-deps -r requirements-nodeps.txt -c constraints.txt
	$(BIN)/python -m pip install -qq --no-deps -e .
	$(BIN)/python infra/pip_check.py
	touch $@

run: setup
	$(BIN)/python -m flows.main

test: setup browser lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

# The unit tests only (no Prefect, DVC or MLflow servers): a few minutes.
test-fast: setup lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder tests --ignore=tests/integration -m "not integration" $(PYTEST_ARGS)

# The docs (mkdocs.yml): a strict build into site/, or served with live reload on 127.0.0.1:8000.
docs: setup
	$(BIN)/python infra/docs_reference.py
	$(BIN)/mkdocs build --strict

docs-serve: setup
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

lint: setup
	$(BIN)/ruff check src flows tasks tests benchmarks infra

# Debian's Chromium for the browser tests of the UIs (headless); installed once.
browser:
	@command -v chromium >/dev/null || { echo "Installing Debian's chromium for the browser tests..."; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

repro: setup
	$(BIN)/dvc repro

# DVC outputs to and from the project's remote (infra/dvc-remote/, or KERNELSCOPE_DVC_REMOTE: a folder or URL).
push: setup
	$(BIN)/python infra/dvc_remote.py push

pull: setup
	$(BIN)/python infra/dvc_remote.py pull

remote-status: setup
	$(BIN)/python infra/dvc_remote.py status

# The Prefect server, the MLflow server and every flow served as a deployment; Ctrl-C stops them all.
ui: setup
	$(BIN)/python infra/services.py up

ui-start: setup
	$(BIN)/python infra/services.py up --detach

ui-stop:
	$(BIN)/python infra/services.py down

ui-status:
	$(BIN)/python infra/services.py status

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs .prefect .run mlflow.db mlruns mlartifacts
