# Two commands do all set-up on a fresh machine:
#   make run    installs into .venv and starts Enclave
#   make test   installs into .venv (with the dev tools) and runs every check and test
# CMAKE_ARGS is passed through to the llama-cpp-python build (see README: GPU builds).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/enclave

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m tests.tiny_models $(VENV)/bench-moe.gguf --kind bench
	$(BIN)/python bench/engine_overhead.py $(VENV)/bench-moe.gguf
	$(BIN)/python bench/planner.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
