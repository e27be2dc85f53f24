# The front door: `make run` and `make test` work on a fresh machine with Python >= 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run install test test-unit lint typecheck bench bench-inbox clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Install only (the virtual environment with the test extras), nothing run.
install: $(INSTALLED)

run: $(INSTALLED)
	STAYHUMAN_LOG_JSON=$${STAYHUMAN_LOG_JSON:-false} $(BIN)/stayhuman up --demo

# Lint, types, then the whole suite (unit, integration, end to end, fuzz).
test: $(INSTALLED) lint typecheck
	$(BIN)/python -m pytest

# The fast lane while iterating: pure logic and in-process tests, no services started.
test-unit: $(INSTALLED)
	STAYHUMAN_FUZZ_EXAMPLES=$${STAYHUMAN_FUZZ_EXAMPLES:-150} $(BIN)/python -m pytest tests/unit -q

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy shared services stayhuman

# `stayhuman bench` starts its own NATS, database and services; BENCH_ARGS e.g. --quick, --full,
# --both, --database-url postgresql://postgres@127.0.0.1:5432/postgres
bench: $(INSTALLED)
	$(BIN)/python -m stayhuman bench $(BENCH_ARGS)

# The inbox on PostgreSQL (STAYHUMAN_TEST_POSTGRES_URL, else the local server): page and API
# latency with 100,000 open conversations, then 1,000 agents on the live stream.
bench-inbox: $(INSTALLED)
	$(BIN)/python -m tests.bench.inbox
	$(BIN)/python -m tests.bench.live

clean:
	rm -rf $(VENV) .stayhuman .pytest_cache .mypy_cache .ruff_cache
