# The index of what a developer can do. Every target sets up what it needs from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LAKE := data/lake
DEMO_NOW := 2026-11-20T06:00:00Z
DEMO_PORT ?= 8000
DEMO_API := http://127.0.0.1:$(DEMO_PORT)
SPOOL := data/spool
REPORT := data/report.html
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install wheel system demo notebook test lint bench clean

$(STAMP): pyproject.toml setup.py
	$(call debian,gcc)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 'setuptools>=68'
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Track as a user installs it: the wheel built from this checkout (the package `track`), in
# place of the editable install. The tests import it, not the checkout.
wheel: $(STAMP)
	rm -rf build
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --force-reinstall .

install: $(STAMP)

# Debian packages, installed (as root) only where missing: `$(call debian,tool ...)`.
define debian
	@for tool in $(1); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	fi
endef

# What the tests use beside Python: chromium (a page is checked in a real browser) and curl
# (the original API's README examples).
system:
	$(call debian,chromium curl)

# Copy the sample into a fresh local lake, give each file the mtime of its day (so the demo
# gives the same answers whenever it runs); post a few events through the HTTP API as an app
# would (SIGTERM moves them into raw/), run the pipeline, print the answers, and ask the API too.
demo: wheel
	$(call debian,curl)
	rm -rf $(LAKE) $(SPOOL)
	mkdir -p $(LAKE)
	cp -R data/sample/raw $(LAKE)/raw
	for f in $(LAKE)/raw/date=*/*; do \
		day=$${f#*date=}; day=$${day%%/*}; touch -d "$$day 23:59:59 UTC" "$$f"; \
	done
	@$(BIN)/track api --lake $(LAKE) --spool $(SPOOL) --port $(DEMO_PORT) 2>$(SPOOL).log & echo $$! > $(SPOOL).pid; \
	for i in $$(seq 50); do curl -s -o /dev/null $(DEMO_API)/health && break; sleep 0.2; done; \
	echo "POST /track and /batch (dana plays for 20 minutes on 2026-11-19):"; \
	curl -s -X POST $(DEMO_API)/track -H 'Content-Type: application/json' \
		-d '{"event": "play", "user_id": "dana", "timestamp": "2026-11-19T20:00:00Z", "metadata": {"song_id": "s1"}}'; echo; \
	curl -s -X POST $(DEMO_API)/batch -d '{"batch": [{"event": "stop", "user_id": "dana", "timestamp": "2026-11-19T20:20:00Z"}, {"event": "pause", "user_id": ""}]}'; echo; \
	kill -TERM $$(cat $(SPOOL).pid); while kill -0 $$(cat $(SPOOL).pid) 2>/dev/null; do sleep 0.1; done
	$(BIN)/track run --lake $(LAKE) --now $(DEMO_NOW)
	$(BIN)/track metrics --lake $(LAKE) --start-date 2026-11-16 --end-date 2026-11-19
	$(BIN)/track metrics --lake $(LAKE) --start-date 2026-11-01 --end-date 2026-11-30 --group-by week
	$(BIN)/track sessions --lake $(LAKE) --start-date 2026-11-16 --end-date 2026-11-19
	$(BIN)/track sessions --lake $(LAKE) --start-date 2026-11-16 --end-date 2026-11-19 --user-id alice
	$(BIN)/track users --lake $(LAKE) --start-date 2026-11-16 --end-date 2026-11-19
	$(BIN)/track users --lake $(LAKE) --start-date 2026-11-01 --end-date 2026-11-30 --group-by week --week-start sunday --event play
	$(BIN)/track report --lake $(LAKE) --start-date 2026-11-13 --end-date 2026-11-20 --out $(REPORT)
	@echo "The report of the sample lake: $(REPORT) (open it in a browser; it needs no network)"
	@$(BIN)/track api --lake $(LAKE) --spool $(SPOOL) --port $(DEMO_PORT) 2>$(SPOOL).log & echo $$! > $(SPOOL).pid; \
	for i in $$(seq 50); do curl -s -o /dev/null $(DEMO_API)/health && break; sleep 0.2; done; \
	echo "GET /sessions?start_date=2026-11-19&end_date=2026-11-19&user_id=dana:"; \
	curl -s -D - "$(DEMO_API)/sessions?start_date=2026-11-19&end_date=2026-11-19&user_id=dana" | grep -iE '^track-as-of|^\{'; echo; \
	kill -TERM $$(cat $(SPOOL).pid); rm -f $(SPOOL).pid

# The notebook of the lake (notebooks/explore.py) in a browser; `make demo` first for a lake.
notebook: $(STAMP)
	TRACK_LAKE=$(LAKE) $(BIN)/marimo edit notebooks/explore.py

# Tests run on every core (at most four worker processes, each with its own Prefect test
# server): most of their time is spent waiting on Prefect servers and `track run` processes.
test: wheel system
	$(BIN)/pytest -q -n auto --maxprocesses 4

# Every figure of the performance section (README); about 16 minutes, inputs cached in bench/out.
BENCHES := throughput duckdb_peer small_files incremental lake_size queries history memory fixed_cost dask plan api
bench: $(STAMP)
	$(call debian,hey)
	$(BIN)/pip install --quiet -e '.[bench]'
	for b in $(BENCHES); do $(BIN)/python bench/$$b.py || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p .typecheck && ln -sfn .. .typecheck/track
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(LAKE) $(SPOOL) $(SPOOL).log $(REPORT) .pytest_cache .hypothesis build .typecheck
