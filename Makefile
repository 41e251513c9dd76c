# `make smoke`: create .venv if missing, run the synthetic smoke benchmark. `make test`: create .venv, run the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env smoke test lint format dryrun bench clean-smoke gpu-check

env: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) > /dev/null || { echo "need $(PYTHON) (Python 3.11); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

smoke: env
	$(BIN)/snakemake --cores all --configfile config/smoke.yaml --show-failed-logs

test: env
	$(BIN)/python -m pytest

lint: env
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/snakemake --lint --configfile config/smoke.yaml

format: env
	$(BIN)/ruff format . && $(BIN)/snakefmt Snakefile workflow/rules

dryrun: env
	$(BIN)/snakemake -n --configfile config/smoke.yaml

clean-smoke:
	rm -rf results/smoke resources/synthetic logs/synthetic

bench: env
	$(BIN)/python -m pytest tests/benchmarks --benchmark-only --benchmark-group-by=group

# On a CUDA machine: steps, loader, sliding window, k runs per GPU -> results/gpu_check/ (docs/gpu.md).
# `make gpu-check GPU_CHECK_ARGS=--quick` runs the tiny CPU version.
GPU_CHECK_ARGS ?=
gpu-check: env
	$(BIN)/python -m harness gpu-check $(GPU_CHECK_ARGS)
