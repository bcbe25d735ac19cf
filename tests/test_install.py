"""`make setup` installs the CPU build of torch by default (CI) and the CUDA build with TORCH=cuda."""

import shutil
import subprocess

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """`make -n setup` against an empty venv folder: the commands it would run, none run."""
    command = ["make", "-n", "-C", str(REPO), "setup", f"VENV={tmp_path / 'venv'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_the_default_setup_installs_cpu_torch_and_the_interpreters_triton(tmp_path):
    out = dry_run(tmp_path).stdout
    assert "pip install -q 'torch==2.13.0'\n" in out and "-e '.[dev,cpu]'" in out
    assert "torch.version.cuda" not in out
    # torchao (the benchmark's peer) is not installed, and an older environment's is removed first
    assert out.index("pip uninstall -q -y torchao") < out.index("-e '.[dev,cpu]'")


def test_torch_cuda_installs_the_cuda_build_and_the_triton_it_pins(tmp_path):
    out = dry_run(tmp_path, "TORCH=cuda").stdout
    assert "pip install -q 'torch==2.13.0,!=2.13.0+cpu'" in out and "-e '.[dev,peers]'" in out
    # the peers extra (torchao, the decode benchmark's torchao4 paths) is installed after the uninstall
    assert out.index("pip uninstall -q -y torchao") < out.index("-e '.[dev,peers]'")
    assert "assert torch.version.cuda" in out  # a CPU wheel that slipped in stops the setup
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / ".torch").write_text("cuda\n")
    assert "!=2.13.0+cpu" in dry_run(tmp_path).stdout  # the venv keeps the build it was made with


def test_another_torch_build_is_refused_naming_the_choices(tmp_path):
    proc = dry_run(tmp_path, "TORCH=rocm")
    assert proc.returncode != 0 and "TORCH must be cpu or cuda, not 'rocm'" in proc.stderr
