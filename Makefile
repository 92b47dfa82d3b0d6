# Two commands matter: `make run` and `make test`. Both set up everything first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := sip-tester baresip kamailio flite espeak-ng sox libsndfile1 chromium tshark postgresql
CONFIG ?= sip.example.conf
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup system-deps lint typecheck pytest bench clean

setup: .stamp-system $(BIN)/voice

# System packages: installed only when one is missing.
.stamp-system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@touch $@

$(BIN)/voice: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

run: setup
	$(BIN)/voice run --config $(CONFIG)

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python benchmarks/calls.py

clean:
	rm -rf $(VENV) .stamp-system *.egg-info
