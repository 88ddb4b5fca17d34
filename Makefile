# The two commands: `make demo` and `make test`. Everything else is for contributors.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The demo needs only the runtime: its own venv without the development extras.
DEMO_VENV  ?= .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help venv demo test test-services lint format typecheck dashboards dashboards-check bench soak clean

help:
	@echo "make demo        run the exporter on a demo SQLite sync log with a simulated pipeline"
	@echo "make test        install what the tests need, start it, run every test, print line coverage"
	@echo "make lint        ruff and mypy"
	@echo "make dashboards  regenerate grafana/dashboards/*.json from code"
	@echo "make bench       benchmarks (prints ratios measured side by side), then the soak"
	@echo "make soak        ten-minute soak test: memory, threads, descriptors"

$(STAMP): pyproject.toml
	@scripts/ensure-python.sh "$(PYTHON)" "$(VENV)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

$(DEMO_STAMP): pyproject.toml
	@scripts/ensure-python.sh "$(PYTHON)" "$(DEMO_VENV)"
	$(DEMO_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/accounting-sync-exporter demo --with-users $(ARGS)

# Installs missing system components (PostgreSQL, prometheus, promtool, alertmanager, amtool),
# makes sure PostgreSQL runs, and writes the URL the tests use to .test-env.
test-services:
	@scripts/test-services.sh

# Line coverage of exporter/ (exporter processes started by system tests included) is
# measured on the way and summarised at the end: a total, then one row per package.
# pytest's own closing line is repeated last, after the coverage table, so that whoever reads
# the end of the output (a person, or CI) sees the outcome.
test: venv test-services
	@rm -f .coverage .coverage.* .test-output.log
	@. ./.test-env && { $(BIN)/python -m pytest --cov --cov-report= $(PYTEST_ARGS); \
	  echo $$? > .test-status; } | tee .test-output.log; \
	status=$$(cat .test-status); $(BIN)/python scripts/coverage_summary.py; \
	grep -E '^=+ .*(passed|failed|error|no tests ran).* in [0-9.]+s' .test-output.log | tail -n 1; \
	rm -f .test-status; exit $$status

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy exporter

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: venv
	$(BIN)/mypy exporter

dashboards: venv
	$(BIN)/python -m grafana.build

dashboards-check: venv
	$(BIN)/python -m grafana.build --check

# The benchmarks print their figures side by side; then the soak, which is too long for
# every `make test` (ten minutes) and so runs here. `make bench SOAK=0` skips it.
SOAK ?= 1
bench: venv test-services
	@. ./.test-env && $(BIN)/python -m bench
	@if [ "$(SOAK)" != 0 ]; then $(MAKE) --no-print-directory soak; fi

# Ten minutes under load; prints memory, threads and descriptors at the start and the end.
soak: venv test-services
	@. ./.test-env && $(BIN)/python -m pytest -m soak -s tests/system/test_soak.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_VENV) .test-env .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
