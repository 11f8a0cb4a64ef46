# Everything runs in .venv, created on first use; PYTHON picks the interpreter that creates it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,plot]"
	touch $(STAMP)

demo: $(STAMP)  ## load the built-in simulator's conversations, write a snapshot, print a summary
	$(BIN)/mihu-frames demo --root data/snapshots

test: $(STAMP)  ## the whole suite, as CI runs it
	$(BIN)/python -m pytest -n 2 -q

test-fast: $(STAMP)  ## without the slow soak tests
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

bench: $(STAMP)  ## timed comparisons, printed as ratios
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/bench_stats.py
	$(BIN)/python benchmarks/bench_sync.py
	$(BIN)/python benchmarks/bench_ratelimit.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
