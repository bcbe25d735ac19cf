"""What produced a set of results: config hash, package versions, git commit, hardware, seed."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path

PACKAGES = ("lcopt", "torch", "transformers", "tokenizers", "datasets", "snakemake", "polars", "rouge", "rouge-score")


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def gpus() -> list[dict] | str:
    """Model, memory and driver of each GPU through NVML (nvidia-ml-py); "none" without an NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no NVIDIA driver (or no nvidia-ml-py) here: a CPU run
        return "none"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append(
                {
                    "index": i,
                    "name": pynvml.nvmlDeviceGetName(handle),
                    "memory_bytes": pynvml.nvmlDeviceGetMemoryInfo(handle).total,
                    "driver": driver,
                }
            )
        return out or "none"
    finally:
        pynvml.nvmlShutdown()


def _torch_cuda() -> str | None:
    import torch

    return torch.version.cuda


def collect(config: dict) -> dict:
    """The provenance record written beside the tables (`provenance.json`)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    status = _git("status", "--porcelain")
    return {
        "config_sha256": config_hash(config),
        "seed": config.get("seed"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "packages": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpus": gpus(),
        "torch_cuda": _torch_cuda(),
        "config": config,
    }
