# Everything runs in .venv, created on first use; PYTHON picks the interpreter that creates it.
# The demo installs what it needs (the library and matplotlib); the tests add the developer
# tools; the notebook adds JupyterLab.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.installed-core
DEV := $(VENV)/.installed-dev
NOTEBOOK := $(VENV)/.installed-notebook

.PHONY: demo test test-fast notebook bench lint format typecheck clean

$(CORE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[plot]"
	touch $@

$(DEV): $(CORE)
	$(BIN)/python -m pip install --quiet -e ".[dev,plot]"
	touch $@

$(NOTEBOOK): $(CORE)
	$(BIN)/python -m pip install --quiet -e ".[notebook]"
	touch $@

demo: $(CORE)  ## load the built-in simulator's conversations, write a snapshot, print a summary
	$(BIN)/mihu-frames demo --root data/snapshots

test: $(DEV)  ## lint, type check and the whole suite, as CI runs it
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 -q

test-fast: $(DEV)  ## the suite without the slow soak tests
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

notebook: $(NOTEBOOK)  ## open the analysis notebook in JupyterLab (it starts its own simulator)
	$(BIN)/jupyter lab notebooks/sessions_analysis.ipynb

bench: $(DEV)  ## timed comparisons, printed as ratios
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/bench_stats.py
	$(BIN)/python benchmarks/bench_sync.py
	$(BIN)/python benchmarks/bench_snapshots.py
	$(BIN)/python benchmarks/bench_ratelimit.py

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV)
	$(BIN)/mypy

format: $(DEV)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
