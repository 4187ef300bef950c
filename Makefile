# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Per-environment stamps: re-install when pyproject.toml changes.
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean help

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

test: $(DEV)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo.mid demo.png
