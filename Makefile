# Needs only Python 3.11 and make: every target creates .venv/ on first use and installs into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench down lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "mltp needs Python 3.11: set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

demo: install
	$(BIN)/mltp demo
	@echo "The sandbox keeps running: open the Prefect UI above. Stop it with: make down"

# Test files are spread over two workers (each with its own sandbox): most tests wait on servers.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every benchmark against a private sandbox: writes benchmarks/RESULTS.md (about half an hour).
bench: install
	$(BIN)/python -m benchmarks

down: install
	$(BIN)/mltp sandbox down

# Re-resolve requirements.lock after changing dependencies in pyproject.toml.
lock: install
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --quiet -o requirements.lock

clean:
	-$(BIN)/mltp sandbox down
	rm -rf $(VENV) .mltp .pytest_cache .ruff_cache
