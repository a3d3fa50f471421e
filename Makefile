# Set-up is automatic: every target creates .venv and installs the project on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test dev sandbox lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed  ## start the sandbox, materialize all 16 assets into data/warehouse.duckdb
	$(BIN)/python -m finance_assets.demo

test: $(BIN)/.installed  ## the test suite (sandbox on loopback, temporary DuckDB files)
	$(BIN)/python -m pytest -q

dev: $(BIN)/.installed  ## the Dagster UI on http://127.0.0.1:3000
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home}; mkdir -p $$DAGSTER_HOME; touch $$DAGSTER_HOME/dagster.yaml; \
	DAGSTER_HOME=$$DAGSTER_HOME $(BIN)/dagster dev -w workspace.yaml

sandbox: $(BIN)/.installed  ## the sandbox API alone on http://127.0.0.1:8765
	$(BIN)/python -m finance_assets.sandbox --port 8765

lint: $(BIN)/.installed
	$(BIN)/ruff check finance_assets finance_assets_tests benchmarks

bench: $(BIN)/.installed  ## benchmarks vs the raw floor and dlt (installs the bench extra)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run --scale 5 --with-dlt

clean:
	rm -rf $(VENV) data .dagster_home
