# Two commands on a fresh machine: `make demo` and `make test`. Every target sets up first and is idempotent.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := python3 -m uv
STAMP := $(VENV)/.setup-done
export ULTRAEDIT_HOME ?= $(CURDIR)/.ultraedit
export DAGSTER_HOME ?= $(ULTRAEDIT_HOME)/dagster

.PHONY: setup system-deps demo test test-fast lint format ui bench lock clean

setup: $(STAMP)

# The venv is rebuilt only when the lock, the project metadata or this recipe change. The installed packages are
# compiled to bytecode once here: where PYTHONDONTWRITEBYTECODE is set (as on our CI machines) Python never caches
# it, and every process (each run worker, the dbt step, each CLI call) recompiled torch, transformers and dagster
# from source: 16 s vs 7 s to import the model libraries (bench/README.md §1).
$(STAMP): requirements.lock pyproject.toml Makefile
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@test -x $(PY) || $(UV) venv $(VENV) --python 3.11 --quiet
	$(UV) pip sync --python $(PY) --quiet --compile-bytecode requirements.lock
	$(UV) pip install --python $(PY) --quiet --no-deps -e .
	$(PY) -m ultraedit_dagster.lake.dbt_project
	@touch $(STAMP)

# Test-only system packages from Debian: Chromium (gallery screenshot test), PostgreSQL (multi-run test).
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium postgresql >/dev/null; \
	  else echo "note: install chromium and postgresql (Debian packages) to run every test"; fi; \
	fi

demo: setup
	$(VENV)/bin/ultraedit demo

test: setup system-deps
	$(PY) -m pytest -q -p no:cacheprovider --durations=30

# For iteration: everything but the tests marked slow (end-to-end runs, daemon, installs).
test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

# Lint (ruff: pyflakes, pycodestyle, bugbear, import order) and the formatter's check; `make format` fixes both.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

ui: setup
	$(VENV)/bin/ultraedit init
	$(PY) -m ultraedit_dagster.lake.dbt_project
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: setup
	$(PY) -m bench.run_all

# Regenerate the hash-pinned lock (no index URLs are written into it).
lock:
	$(UV) pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 --no-header -o requirements.lock

clean:
	rm -rf .ultraedit
