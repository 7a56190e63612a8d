# One Makefile for humans and CI. Every target bootstraps .venv from a bare python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install demo test test-unit test-contract test-integration test-e2e lint format \
        openapi bench bench-load clean lock

help:
	@echo "make demo   - set up .venv and run the end-to-end demo (SQLite, in-process cache)"
	@echo "make test   - set up .venv and run unit, contract, integration and e2e tests"
	@echo "make openapi | bench | bench-load | lint | format | lock | clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list or the pins change.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/trading demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-contract: $(STAMP)
	$(BIN)/python -m pytest tests/contract $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

openapi: $(STAMP)
	$(BIN)/python -m trading.openapi

bench: $(STAMP)
	$(BIN)/python bench/market.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/backtest.py
	$(BIN)/python bench/predictor.py

# 500 concurrent clients across cache expiries, a Redis crash and a database drop (needs
# PostgreSQL on 127.0.0.1:5432 and redis-server on the PATH; several minutes).
bench-load: $(STAMP)
	$(BIN)/python bench/load.py

# Re-resolve the pins from pyproject.toml (needs the registry).
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis .schemathesis
