"""Every computing stage of the default run gives the same bytes in two fresh processes (issue 21): the
demo classifier's vocabulary and weights, its compressed contexts, the pruned, GPTQ and RTN weights and
the predictions (all but the clock and memory readings). Fresh processes, each with its own hash seed,
because the causes found were per process: hash-map order in the `tokenizers` trainer, and the thread
count that splits a sum (pinned to one, as in the workflow's rules)."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from determinism_stages import STAGES

from lcopt.workflow import CPU_KERNELS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The stages' digests from two processes run side by side, with different hash seeds."""
    procs = []
    for seed in ("1", "2"):
        out = tmp_path_factory.mktemp(f"run{seed}")
        # the CPU kernels the workflow's jobs get (lcopt.workflow.pin_cpu_kernels), unless already set
        env = CPU_KERNELS | dict(os.environ) if platform.machine().lower() in ("x86_64", "amd64") else dict(os.environ)
        env |= {"PYTHONHASHSEED": seed, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
        command = [sys.executable, str(REPO / "tests" / "determinism_stages.py"), str(out)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_gives_the_same_output_in_two_processes(two_runs, stage):
    first, second = two_runs
    assert first[stage] == second[stage], f"{stage} differs between two processes"


def test_the_vocabulary_is_learned_from_frequencies():
    """Frequent words stay whole, rare ones come in '##' pieces, and ties go to the smaller string."""
    from lcopt.techniques.lingua2 import wordpiece_vocabulary

    texts = ["the cat sat . the cat ran . the dog sat"] * 3 + ["zyx"]
    vocab = wordpiece_vocabulary(texts, 30)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert {"the", "cat", "sat", "z", "##y", "##x"} <= set(vocab)
    assert "zyx" not in vocab  # one occurrence: merged only after every more frequent pair
    assert vocab[-4:] == ["##an", "##og", "dog", "ran"]  # three occurrences each: in string order
    assert vocab == wordpiece_vocabulary(list(reversed(texts)), 30)  # the texts' order does not matter


def test_cpu_kernels_are_pinned_on_x86_64_and_a_variable_already_set_wins(monkeypatch):
    from lcopt import workflow

    for name in workflow.CPU_KERNELS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.setattr(workflow.platform, "machine", lambda: "x86_64")
    pinned = workflow.pin_cpu_kernels()
    assert pinned == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert all(os.environ[name] == value for name, value in pinned.items())
    monkeypatch.setattr(workflow.platform, "machine", lambda: "aarch64")  # the AVX2 names mean nothing there
    assert workflow.pin_cpu_kernels() == {}
