# Syncdesk: `make demo` runs the whole product; `make test` runs the whole suite (what CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
MANAGE := $(PY) manage.py
# pip honours any extra indexes configured on the machine, but installs only what the lock names.
PIP_INSTALL := $(BIN)/pip install --quiet --require-hashes --no-deps

.PHONY: help venv venv-dev demo demo-check test test-fast lint format lock migrate clean

help:
	@echo "make demo       set everything up and run Syncdesk on http://127.0.0.1:8000"
	@echo "make test       set up and run the whole test suite (what CI runs)"
	@echo "make test-fast  the quick subset, for while you work"
	@echo "make lint       ruff, mypy, import contracts and cycles, sizes, makemigrations --check"
	@echo "make lock       re-resolve requirements/*.txt from pyproject.toml (with hashes)"

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Syncdesk needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.base-installed: requirements/base.txt | $(BIN)/python
	$(PIP_INSTALL) -r requirements/base.txt
	touch $@

$(VENV)/.dev-installed: requirements/dev.txt | $(BIN)/python
	$(PIP_INSTALL) -r requirements/dev.txt
	touch $@ $(VENV)/.base-installed

venv: $(VENV)/.base-installed
venv-dev: $(VENV)/.dev-installed

migrate: venv
	$(MANAGE) migrate --noinput

demo: venv
	$(MANAGE) migrate --noinput
	$(MANAGE) collectstatic --noinput --verbosity 0
	$(MANAGE) seed_demo
	$(MANAGE) run_demo

demo-check: venv
	$(PY) scripts/demo_check.py

test: venv-dev
	$(PY) -m pytest -q -n 2

test-fast: venv-dev
	$(PY) -m pytest -m "not slow" -q -x -n 2

lint: venv-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	$(PY) scripts/check_import_cycles.py
	$(PY) scripts/check_sizes.py
	$(MANAGE) makemigrations --check --dry-run

format: venv-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: venv-dev
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 -o requirements/base.txt
	$(BIN)/uv pip compile pyproject.toml --group dev --generate-hashes --python-version 3.11 -o requirements/dev.txt

clean:
	rm -rf $(VENV) var
