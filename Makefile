# Set-up is automatic: every target creates .venv and installs the project on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo report test dev sandbox lint bench bench-organizations screenshots clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed  ## the main job on the sandbox, into data/sandbox.duckdb, then a summary
	$(BIN)/python -m finance_assets.demo

report: $(BIN)/.installed  ## latest materializations and check results (exit 1: an ERROR check failed)
	@DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/dagster_home} $(BIN)/python -m finance_assets.report $(if $(FORMAT),--format $(FORMAT))

test: $(BIN)/.installed  ## the test suite (sandbox on loopback, temporary DuckDB files)
	$(BIN)/python -m pytest -q

dev: $(BIN)/.installed  ## the Dagster UI on http://127.0.0.1:3000 (dg dev, DAGSTER_HOME=dagster_home)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/dagster_home} VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg dev

sandbox: $(BIN)/.installed  ## the sandbox API alone on http://127.0.0.1:8765
	$(BIN)/python -m finance_assets.sandbox --port 8765

screenshots: $(BIN)/.installed  ## the README's pictures (docs/*.png) taken again from the current UI by the browser tests
	UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q finance_assets_tests/test_ui.py

lint: $(BIN)/.installed
	$(BIN)/ruff check finance_assets finance_assets_tests benchmarks

bench: $(BIN)/.installed  ## benchmarks vs the raw floor and dlt (installs the bench extra)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run --scale 5 --with-dlt

bench-organizations: $(BIN)/.installed  ## 8 organizations, each its own sandbox and limit: runs together, in turn, and one at scale 8
	$(BIN)/python -m benchmarks.organizations --organizations 8 --scale 1

clean:  ## the environment, the data files and the instance's runs (not dagster_home/dagster.yaml)
	rm -rf $(VENV) data
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
