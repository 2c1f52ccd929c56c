# The index of what a developer can do. Every target sets up what it needs from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LAKE := data/lake
DEMO_NOW := 2026-11-20T06:00:00Z
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install system demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The Debian packages the tests use: chromium (a page is checked in a real browser) and curl
# (the original API's README examples). Installed once, as root, on a machine without them.
SYSTEM_TOOLS := chromium curl
system:
	@for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	fi

# Copy the sample into a fresh local lake, give each file the mtime of its day (so the demo
# gives the same answers whenever it runs), run the pipeline and print the answers.
demo: $(STAMP)
	rm -rf $(LAKE)
	mkdir -p $(LAKE)
	cp -R data/sample/raw $(LAKE)/raw
	for f in $(LAKE)/raw/date=*/*; do \
		day=$${f#*date=}; day=$${day%%/*}; touch -d "$$day 23:59:59 UTC" "$$f"; \
	done
	$(BIN)/track run --lake $(LAKE) --now $(DEMO_NOW)
	$(BIN)/track metrics --lake $(LAKE) --start-date 2026-11-16 --end-date 2026-11-19
	$(BIN)/track metrics --lake $(LAKE) --start-date 2026-11-01 --end-date 2026-11-30 --group-by week
	$(BIN)/track sessions --lake $(LAKE) --start-date 2026-11-16 --end-date 2026-11-19
	$(BIN)/track sessions --lake $(LAKE) --start-date 2026-11-16 --end-date 2026-11-19 --user-id alice

# Tests run on every core (at most four worker processes, each with its own Prefect test
# server): most of their time is spent waiting on Prefect servers and `track run` processes.
test: $(STAMP) system
	$(BIN)/pytest -q -n auto --maxprocesses 4

# Every figure of the performance section (README); about 15 minutes, inputs cached in bench/out.
BENCHES := throughput duckdb_peer small_files incremental queries memory fixed_cost
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	for b in $(BENCHES); do $(BIN)/python bench/$$b.py || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(LAKE) .pytest_cache .hypothesis
