# Set-up and everyday commands. `make run` and `make test` work on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install run test lint bench clean

$(BIN)/posegnn-train:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"

install: $(BIN)/posegnn-train

run: install  ## the main job: synthetic data, train on CPU, AP table gnn vs ae vs oracle
	$(BIN)/posegnn-train experiment=quickstart

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check posegnn tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_graphs.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_grouping.py
	$(BIN)/python benchmarks/bench_refine.py
	$(BIN)/python benchmarks/bench_compile.py

clean:
	rm -rf outputs/data outputs/cache outputs/train outputs/eval outputs/multirun
