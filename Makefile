# t2itool: `make demo` runs the whole pipeline on the built-in dataset, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/t2itool demo --out demo-run

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check t2itool tests benchmarks examples
	$(BIN)/ruff format --check t2itool tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff format t2itool tests benchmarks examples
	$(BIN)/ruff check --fix t2itool tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) demo-run .pytest_cache
