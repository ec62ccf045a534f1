# Developer and CI entry points. See README Quickstart.
#   make venv   create .venv (python3.11) and `pip install -e '.[dev]'` (skipped when up to date)
#   make run    migrate the embedded SQLite db, run API (127.0.0.1:$MMLOP_PORT) + one Celery worker
#   make test   start PostgreSQL/Redis if needed, then pytest over tests/ (or PYTEST_ARGS' paths),
#               in PYTEST_WORKERS (2) pytest-xdist processes, one test file per process at a time
#               (PYTEST_WORKERS=0: one process, as --pdb or -p no:xdist in PYTEST_ARGS need)
#   make bench  run every runnable benchmarks/<name>.py as `python -m benchmarks.<name>`
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
VPY := $(VENV)/bin/python
# pytest options for `make test` (e.g. PYTEST_ARGS='-m "not slow"' or a single file). Paths in it
# replace tests/; without one, pytest's testpaths (pyproject.toml) is tests/.
PYTEST_ARGS ?=
PYTEST_TIMEOUT ?= 1800
# pytest-xdist worker processes (0 = one process, no xdist). Each worker and what it starts uses one
# torch thread (tests/conftest.py), so 2 fill the 2 cores of our CI machines without oversubscribing.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter-out 0,$(strip $(PYTEST_WORKERS))),-n $(strip $(PYTEST_WORKERS)) --dist loadfile,)

# The install is redone when pyproject.toml changes or a top-level package appears/disappears
# (an editable install maps only the packages that existed when it ran).
PACKAGES := $(sort $(wildcard mmlop_core mmlop_client api worker service benchmarks))
INSTALL_KEY := $(shell { cat pyproject.toml; echo $(PACKAGES); } | sha256sum | cut -c1-16)
STAMP := $(VENV)/.mmlop-install-$(INSTALL_KEY)

.PHONY: help venv run test services bench

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x "$(VPY)" ]; then \
		command -v "$(PYTHON)" >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=...)" >&2; exit 1; }; \
		echo "creating $(VENV) with $(PYTHON)"; \
		"$(PYTHON)" -m venv "$(VENV)"; \
	fi
	"$(VPY)" -m pip install -e '.[dev]'
	@rm -f $(VENV)/.mmlop-install-*
	@touch "$@"

run: venv
	PYTHON="$(VPY)" scripts/run_embedded.sh

services:
	scripts/ci_services.sh

test: venv services
	@rc=0; "$(VPY)" -m pytest --timeout=$(PYTEST_TIMEOUT) $(XDIST) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ] && [ -z "$$(find tests -name 'test_*.py' -o -name '*_test.py' | head -n1)" ]; then \
		echo "no tests in tests/ yet"; rc=0; \
	fi; \
	exit $$rc

bench: venv
	@found=0; for f in benchmarks/*.py; do \
		[ -e "$$f" ] || continue; m=$$(basename "$$f" .py); \
		case "$$m" in __init__|_*|conftest) continue;; esac; \
		grep -q '__main__' "$$f" || continue; \
		found=1; echo "== benchmarks.$$m"; "$(VPY)" -m "benchmarks.$$m"; \
	done; \
	[ $$found -eq 1 ] || echo "no benchmarks in benchmarks/"
