# Everything runs in .venv, created on first use; PYTHON picks the interpreter that creates it.
# The demo installs what it needs (the library and matplotlib); the tests add the developer
# tools, the docs tools and PySpark (its tests run a local Spark on Java 17); the notebook adds
# JupyterLab and DuckDB; the docs add MkDocs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.installed-core
DEV := $(VENV)/.installed-dev
NOTEBOOK := $(VENV)/.installed-notebook
DOCS := $(VENV)/.installed-docs
# Material for MkDocs prints a banner about MkDocs 2 on every build otherwise
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test test-fast notebook docs docs-serve bench lint format typecheck clean

$(CORE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[plot]"
	touch $@

$(DEV): $(CORE)
	$(BIN)/python -m pip install --quiet -e ".[dev,plot,docs,spark]"
	touch $@

$(NOTEBOOK): $(CORE)
	$(BIN)/python -m pip install --quiet -e ".[notebook]"
	touch $@

$(DOCS): $(CORE)
	$(BIN)/python -m pip install --quiet -e ".[docs,plot]"
	touch $@

demo: $(CORE)  ## load the built-in simulator's conversations, write a snapshot, print a summary
	$(BIN)/mihu-frames demo --root data/snapshots

test: $(DEV)  ## lint, type check, the whole suite and the strict docs build, as CI runs it
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --quiet --site-dir build/site-check
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

test-fast: $(DEV)  ## the suite without the slow soak tests
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

notebook: $(NOTEBOOK)  ## open the analysis notebook in JupyterLab (it starts its own simulator)
	$(BIN)/jupyter lab notebooks/sessions_analysis.ipynb

docs: $(DOCS)  ## the reference site into site/: figures from the simulator, then a strict build
	$(BIN)/python docs/gen_figures.py
	$(BIN)/mkdocs build --strict

docs-serve: $(DOCS)  ## the reference site on http://127.0.0.1:8000, rebuilt on every change
	$(BIN)/mkdocs serve

bench: $(DEV)  ## timed comparisons, printed as ratios
	$(BIN)/python benchmarks/bench_load.py
	$(BIN)/python benchmarks/bench_stats.py
	$(BIN)/python benchmarks/bench_sync.py
	$(BIN)/python benchmarks/bench_snapshots.py
	$(BIN)/python benchmarks/bench_ratelimit.py
	$(BIN)/python benchmarks/bench_since.py

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV)
	$(BIN)/mypy

format: $(DEV)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build site *.egg-info
