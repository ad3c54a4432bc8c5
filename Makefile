# Fresh machine: `make run` sets up and transcribes the demo clips; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/asrserve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/asrserve

run: setup
	$(BIN)/asrserve transcribe models/asrserve-tiny-lstm-synth-en/test_wavs/*.wav

system-deps:
	@tools/system-deps.sh

test: setup system-deps
	$(BIN)/ruff check asrserve tests $(wildcard benchmarks)
	for v in 3.10 3.11 3.12 3.13; do $(BIN)/mypy --python-version $$v asrserve || exit 1; done
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_streaming.py

.PHONY: setup system-deps run test bench
