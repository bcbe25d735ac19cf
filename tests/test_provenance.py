"""Provenance: config hash, seed, git commit, package versions and GPUs (NVML), or "none" on a CPU."""

import re
import sys
import types

from lcopt import provenance
from lcopt.workflow import CPU_KERNELS


def test_provenance_names_config_seed_commit_and_versions():
    config = {"seed": 3, "models": {"m": {"path": "lcopt-demo"}}}
    record = provenance.collect(config)
    assert record["config_sha256"] == provenance.config_hash(dict(config)) and len(record["config_sha256"]) == 64
    assert provenance.config_hash(config | {"seed": 4}) != record["config_sha256"]
    assert record["seed"] == 3 and record["config"] == config
    assert re.fullmatch(r"[0-9a-f]{40}", record["git_commit"])  # the tests run from a checkout
    assert isinstance(record["git_dirty"], bool)
    assert record["packages"]["torch"] and record["packages"]["transformers"] and record["packages"]["lcopt"]
    assert record["cpu"] and set(record["cpu_kernels"]) == set(CPU_KERNELS)  # a CPU run's numbers depend on them


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


# --- the code a stage runs ----------------------------------------------------------------------

from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _modules(script: str, *roots: str) -> set[str]:
    """The lcopt modules hashed for a script (and further roots), relative to the package's folder."""
    files = provenance.code_files(str(REPO / script), *roots)
    return {str(p.relative_to(provenance.PACKAGE_ROOT)) for p in files if p.is_relative_to(provenance.PACKAGE_ROOT)}


def test_each_stage_hashes_the_modules_it_imports_and_not_the_others():
    score = _modules("scripts/score.py")
    assert {"lcopt/scoring.py", "lcopt/metrics.py", "lcopt/tasks.py", "lcopt/io.py"} <= score
    assert "lcopt/inference.py" not in score and "lcopt/models.py" not in score
    inference = _modules("scripts/inference.py")
    # function-level imports are followed: the engine and the model loader run inside `run`
    assert {"lcopt/inference.py", "lcopt/engine.py", "lcopt/models.py", "lcopt/prompts.py"} <= inference
    assert "lcopt/metrics.py" not in inference and "lcopt/scoring.py" not in inference
    # imports for annotations only (`if TYPE_CHECKING:`) run nothing: models.py's of lcopt.data
    assert "lcopt/data.py" not in _modules("scripts/prompts.py")
    assert "lcopt/data.py" in _modules("scripts/model_technique.py")
    # a technique's module is a root of its own (the registry imports them all, dynamically)
    assert "lcopt/techniques/lingua2.py" not in inference
    assert "lcopt/techniques/lingua2.py" in _modules("scripts/compress.py", "lcopt.techniques.lingua2")


def test_code_hash_changes_with_any_file_it_covers(tmp_path):
    user = tmp_path / "my_technique.py"
    user.write_text("from lcopt.io import read_jsonl\n")
    first = provenance.code_sha256(str(user))
    assert provenance.code_sha256(str(user)) == first and len(first) == 64
    user.write_text("from lcopt.io import read_jsonl\nX = 1\n")
    provenance.code_sha256.cache_clear()  # each snakemake run is a new process
    second = provenance.code_sha256(str(user))
    assert second != first
    user.write_text("from lcopt.io import read_jsonl\n")
    provenance.code_sha256.cache_clear()
    assert provenance.code_sha256(str(user)) == first  # contents, not times
    assert {p.name for p in provenance.code_files(str(user))} == {"my_technique.py", "io.py"}


def test_git_state_names_commit_and_dirty_flag():
    state = provenance.git_state()
    assert re.fullmatch(r"[0-9a-f]{40}", state["git_commit"]) and isinstance(state["git_dirty"], bool)
