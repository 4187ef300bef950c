# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Per-environment stamps: re-install when pyproject.toml changes.
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: demo test test-jack lint bench clean help

help:
	@echo "make demo   the call-and-response demo on the bundled model: demo.mid, demo.png (creates .venv)"
	@echo "make test   run the test suite (creates .venv with the train and dev extras)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "MuseBridge needs Python 3.11 or newer: run make PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BASE): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[viz]'
	@touch $@

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	@touch $@ $(BASE)

demo: $(BASE)
	$(BIN)/musebridge demo

# The real-port tests (JACK dummy server, 0.67 ms cycles) run first, in their own process, and do not gate the
# result yet: on a shared 2-core VM they fail about one run in three (missed JACK deadlines, and a stuck-note case
# after kill -9 that is still being investigated). Their outcome is printed; `make test-jack` runs them alone and
# fails on failure. Everything else gates.
test: $(DEV)
	-$(BIN)/python -m pytest -q -m jack $(PYTEST_ARGS) || echo "make test: the JACK real-port tests FAILED (not gating yet, see Makefile)"
	-@pkill -f 'jack[d] -n mbtest-' 2>/dev/null || true
	$(BIN)/python -m pytest -q -m "not jack" $(PYTEST_ARGS)

test-jack: $(DEV)
	$(BIN)/python -m pytest -q -m jack $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo.mid demo.png
