# metrics_pipeline — everything a newcomer needs is `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# The embedded default: SQLite catalog, shards and warehouse in ./data, a Dagster instance in
# ./.dagster_home so `make dev` shows the runs `make demo` made.
export METRICS_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DEMO_DAYS ?= 14
# demo-data writes the first demo day here, so `make demo` and `make dev` show partitions
# from that day on (METRICS_PARTITIONS_START; unset, the partitions start on 2025-01-05).
-include $(METRICS_DATA_DIR)/demo.env
export METRICS_PARTITIONS_START
HOST ?= 127.0.0.1
PORT ?= 3000
API_PORT ?= 8000

.PHONY: install demo dev up test test-deps api bench lint clean services

$(STAMP): pyproject.toml
	./scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/metrics-pipeline demo-data --days $(DEMO_DAYS)
	. $(METRICS_DATA_DIR)/demo.env && export METRICS_PARTITIONS_START && \
	  $(BIN)/metrics-pipeline materialize --last-days $(DEMO_DAYS) --family all
	@echo
	@echo "Open the Dagster UI with:  make dev   (then http://$(HOST):$(PORT))"
	@echo "Or everything (Dagster, portal http://$(HOST):$(API_PORT), collector, consumer):  make up"

dev: install
	mkdir -p $(DAGSTER_HOME)
	# One "planned" event per asset and run (not per partition) for the runs the webserver and
	# daemon create, as deploy/ sets it (README, "The command line").
	DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1 \
	  $(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

# Everything at once, after `make demo`: the Dagster webserver and daemon, the API and dashboard,
# the collector and the consumer (and NATS if installed but down); logs prefixed, Ctrl-C stops all.
up: install
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/metrics-pipeline up --host $(HOST) --dagster-port $(PORT) --api-port $(API_PORT)

services:
	./scripts/services.sh

api: install
	$(BIN)/metrics-pipeline api --host $(HOST) --port $(API_PORT)

# Chromium (Debian's) for the dashboard's browser test; Playwright drives it, never downloads one.
# Prometheus and Alertmanager (Debian's) for the alert tests, which start their own on free ports.
test-deps: install
	./scripts/system-deps.sh chromium prometheus prometheus-alertmanager

# The tests choose their own partitions start: the demo's setting is not theirs.
test: install test-deps services
	promtool check rules deploy/prometheus/rules.yml
	promtool test rules deploy/prometheus/rules.test.yml
	$(BIN)/lint-imports
	env -u METRICS_PARTITIONS_START $(BIN)/pytest -q --durations=15

bench: install services
	./scripts/system-deps.sh wrk
	$(BIN)/python -m benchmarks.run_all

lint: install
	$(BIN)/ruff check metrics_pipeline tests benchmarks
	$(BIN)/ruff format --check metrics_pipeline tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf data .dagster_home
