# Fresh machine: `make run` sets up (runtime dependencies only) and transcribes the
# demo clips beside their reference texts; `make test` sets up the development
# set (reference runtimes, linters, browser driver, Ray) and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := models/asrserve-tiny-lstm-synth-en

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.runtime

setup: $(VENV)/.runtime

setup-dev: $(VENV)/.dev

run: setup
	$(BIN)/asrserve transcribe --reference $(DEMO)/test_wavs/trans.txt $(DEMO)/test_wavs/*.wav

system-deps:
	@tools/system-deps.sh

test: setup-dev system-deps
	$(BIN)/ruff check asrserve tests $(wildcard benchmarks)
	for v in 3.10 3.11 3.12 3.13; do $(BIN)/mypy --python-version $$v asrserve || exit 1; done
	$(BIN)/python -m pytest -q

bench: setup-dev
	$(BIN)/python benchmarks/bench_streaming.py

.PHONY: setup setup-dev system-deps run test bench
