# The front door: `make run` and `make test` work on a fresh machine with Python >= 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(INSTALLED)
	STAYHUMAN_LOG_JSON=$${STAYHUMAN_LOG_JSON:-false} $(BIN)/stayhuman up --demo

test: $(INSTALLED) lint
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services stayhuman

bench: $(INSTALLED)
	$(BIN)/python -m tests.bench.smoke

clean:
	rm -rf $(VENV) .stayhuman .pytest_cache .mypy_cache .ruff_cache
