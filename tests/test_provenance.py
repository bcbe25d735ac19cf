"""Provenance: config hash, seed, git commit, package versions and GPUs (NVML), or "none" on a CPU."""

import re
import sys
import types

from lcopt import provenance


def test_provenance_names_config_seed_commit_and_versions():
    config = {"seed": 3, "models": {"m": {"path": "lcopt-demo"}}}
    record = provenance.collect(config)
    assert record["config_sha256"] == provenance.config_hash(dict(config)) and len(record["config_sha256"]) == 64
    assert provenance.config_hash(config | {"seed": 4}) != record["config_sha256"]
    assert record["seed"] == 3 and record["config"] == config
    assert re.fullmatch(r"[0-9a-f]{40}", record["git_commit"])  # the tests run from a checkout
    assert isinstance(record["git_dirty"], bool)
    assert record["packages"]["torch"] and record["packages"]["transformers"] and record["packages"]["lcopt"]


def test_gpus_are_none_without_an_nvidia_driver(monkeypatch):
    fake = types.SimpleNamespace(nvmlInit=lambda: (_ for _ in ()).throw(OSError("libnvidia-ml.so.1 not found")))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert provenance.gpus() == "none"


def test_gpus_come_from_nvml(monkeypatch):
    """nvidia-ml-py's calls, faked: model, memory and driver of each device."""
    shut = []
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: shut.append(True),
        nvmlSystemGetDriverVersion=lambda: "560.35.03",
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: f"NVIDIA H100 80GB HBM3 #{h}",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=85_520_809_984),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert provenance.gpus() == [
        {"index": i, "name": f"NVIDIA H100 80GB HBM3 #{i}", "memory_bytes": 85_520_809_984, "driver": "560.35.03"}
        for i in range(2)
    ]
    assert shut == [True]
