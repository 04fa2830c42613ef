PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP_TEST := $(VENV)/.installed-test
STAMP_BASE := $(VENV)/.installed

.PHONY: demo test bench clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel

# the numba kernels are compiled once here, into their cache, not by the first run
$(STAMP_BASE): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	$(BIN)/python -m bigquant.pipeline.warm
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test]"
	$(BIN)/python -m bigquant.pipeline.warm
	touch $@ $(STAMP_BASE)

install: $(STAMP_BASE)

demo: $(STAMP_BASE)
	$(BIN)/bigquant demo

test: $(STAMP_TEST)
	$(BIN)/python -m pytest

bench: $(STAMP_TEST)
	$(BIN)/python -m pip install -e ".[bench]"
	$(BIN)/python bench/bench_fit.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
