"""Glue for the workflow's scripts: each rule's log file gets the job's logging, warnings and
progress bars, so a job can be followed with `tail -f` and read after it failed; the error that ends a
job is also printed where snakemake shows it. And the CPU kernels every job computes with."""

from __future__ import annotations

import logging
import os
import platform
import sys
import traceback
from pathlib import Path

# On x86-64, PyTorch's vectorized kernels, MKL (matrix products and LAPACK) and oneDNN take their AVX2
# paths, which every x86-64 CPU of the last decade has. Left to choose, each takes what it finds best on
# the CPU at hand (AVX-512 on many Intel CPUs; on AMD, MKL's own non-Intel dispatch), and their sums
# round differently. Measured on an AMD EPYC (AVX2): MKL_CBWR=AVX2 changes MKL's cholesky_inverse, which
# GPTQ runs on every layer's Hessian, so the default run's GPTQ weights changed with it and gptq4 on
# passkey-2k reads 86.5 pinned against 92.7 unpinned (issue 21's fresh run on another machine read 86.5);
# forcing PyTorch's plain kernels (ATEN_CPU_CAPABILITY=default) changed matrix products, softmax and
# attention, and one of the first four gptq4 answers on passkey-2k. Pinned, any two x86-64 machines
# take the same paths; a variable already set wins. With the thread counts the rules fix, this is what
# lets a CPU run's numbers be the same on another machine.
CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_cpu_kernels() -> dict[str, str]:
    """Set `CPU_KERNELS` in this process's environment (for the jobs it starts, before they import torch)
    on an x86-64 machine; returns what the jobs get ({} elsewhere)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    for name, value in CPU_KERNELS.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in CPU_KERNELS}


def setup_logging(log_path: str | Path) -> None:
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the job
    sys.stdout = sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=stream, force=True
    )
    logging.captureWarnings(True)

    def report(exc_type, exc, tb):
        """The traceback goes to the log; the error itself also to snakemake's output."""
        traceback.print_exception(exc_type, exc, tb)
        print(f"{exc_type.__module__}.{exc_type.__name__}: {exc}\n(full traceback: {log_path})", file=sys.__stderr__)

    sys.excepthook = report
