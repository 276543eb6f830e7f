# Two entry points for a machine that has only Python: `make demo` and `make test`.
# Each creates .venv and installs jobrunner into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs openapi bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/jobrunner demo

# import-linter reads a package's modules from disk, and the editable install maps the folders
# under the `jobrunner` root only at import time: so it checks a throwaway install of the tree.
IMPORTCHECK := build/importcheck

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	rm -rf $(IMPORTCHECK)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --target $(IMPORTCHECK) .
	cd $(IMPORTCHECK) && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml

# Two pytest processes (pytest-xdist), each taking whole files so module fixtures and in-order
# tests stay together: the suite mostly waits on servers and workers, so two share 2 cores.
# The fleet (lease timings over network namespaces) then runs alone, as before.
test: lint
	$(BIN)/pytest -n 2 --dist loadfile -m "not fleet"
	$(BIN)/pytest -m fleet

# The documentation site (mkdocs.yml); strict, so a warning such as a broken link fails it.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

# The HTTP API's OpenAPI document for the site (tests/worker/api/test_openapi.py keeps it current).
openapi: $(STAMP)
	JOBRUNNER_BROKER_URL=redis://127.0.0.1:1/0 $(BIN)/python -c 'import json; \
	from jobrunner.config import get_settings; from jobrunner.worker.api.app import create_api; \
	print(json.dumps(create_api(get_settings()).openapi(), indent=2))' > docs/openapi.json

# Benchmarks against plain Celery (and Huey with --peers) on the same Redis and processes.
bench: $(STAMP)
	$(BIN)/jobrunner bench --peers

bench-quick: $(STAMP)
	$(BIN)/jobrunner bench --quick

clean:
	rm -rf $(VENV) .jobrunner .pytest_cache .ruff_cache build
