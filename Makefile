# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Per-environment stamps: re-install when pyproject.toml changes.
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev
# An editable install of this layout (top-level engine/, bridge/, export/ mapped into the musebridge package) makes
# setuptools print an "Editable installation ... folders in your working directory" notice as a warning on every
# install. It is information, not a problem (the tests import from the repository root): silence that one message.
EDITABLE := PYTHONWARNINGS="ignore:Editable installation$${PYTHONWARNINGS:+,$$PYTHONWARNINGS}" \
	$(BIN)/python -m pip install --quiet -e

.PHONY: demo test test-jack lint bench clean help

help:
	@echo "make demo   the call-and-response demo on the bundled model: demo.mid, demo.png, demo.wav (creates .venv)"
	@echo "make test   run the test suite (creates .venv with the train and dev extras)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "MuseBridge needs Python 3.11 or newer: run make PYTHON=python3.11 (or newer)")'
	@echo "creating $(VENV) (a virtual environment: nothing is installed system-wide)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip

$(BASE): pyproject.toml | $(BIN)/python
	@echo "installing musebridge and its dependencies into $(VENV) (first time: about a minute)"
	@$(EDITABLE) '.[viz]'
	@touch $@

$(DEV): pyproject.toml | $(BIN)/python
	@echo "installing musebridge with the train and dev extras into $(VENV)"
	@$(EDITABLE) '.[train,dev]'
	@touch $@ $(BASE)

demo: $(BASE)
	$(BIN)/musebridge demo

# The real-port tests (JACK dummy server, 2.7 ms cycles) run first, in their own process (their JACK clients and
# threads stay out of the other tests' way); everything runs, and the target fails if either part failed.
test: $(DEV)
	@$(BIN)/python -m pytest -q -m jack $(PYTEST_ARGS); jack=$$?; \
	pkill -f 'jack[d] -n mbtest-' 2>/dev/null; \
	$(BIN)/python -m pytest -q -m "not jack" $(PYTEST_ARGS); rest=$$?; \
	if [ $$jack -ne 0 ]; then echo "make test: the JACK real-port tests failed"; fi; \
	exit $$(( jack || rest ))

test-jack: $(DEV)
	$(BIN)/python -m pytest -q -m jack $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo.mid demo.png demo.wav
