"""The workflow on a real SLURM cluster through profiles/slurm: every job an sbatch job, one inference job
cancelled mid-run, and a rerun that resumes it and matches a normal local run.

Runs only where `.ci/slurm.sh` has started a one-node cluster (it sets LCOPT_SLURM=1); CI runs it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lcopt.inference import READINGS

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles/slurm"

pytestmark = pytest.mark.skipif(
    os.environ.get("LCOPT_SLURM") != "1" or shutil.which("sbatch") is None,
    reason="needs a running SLURM cluster: run `bash .ci/slurm.sh` as root (CI does)",
)

SAMPLES = 24
CONFIG = {
    "device": "cpu",
    "samples": SAMPLES,
    "models": {"demo": {"path": "lcopt-demo", "max_input_tokens": 3000}},
    "datasets": {"passkey-2k": {"synthetic": "passkey", "words": 2048}},
    "stacks": ["baseline", "kivi4"],
}
KILLED = "results/predictions/demo/baseline/passkey-2k.jsonl"
WILDCARDS = "demo_baseline"  # how the plugin names the job in its SLURM comment (one job per stack)
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# The plugin's defaults (40 s before the first status check, 10 s between checks) suit a busy cluster;
# on this one-node test cluster they would be most of the test's time.
FAST_POLLING = ("--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2")


def snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """snakemake started in the run folder (as a user would, so the profile's relative log folder is there)."""
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml", *args],
        cwd=workdir,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: int = 900) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # a failed test leaves no snakemake behind (slurm.sh cancels its jobs)
            proc.kill()
    return proc.returncode, out


def workdir(root: Path, name: str, config: dict) -> Path:
    path = root / name
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path


def cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def slurm_jobs(comment_part: str) -> list[dict]:
    """This run's jobs from the accounting database (sacct), one dict per job allocation."""
    fields = ["JobID", "State", "ExitCode", "Comment", "ReqMem", "Timelimit", "AllocTRES"]
    sacct = ["sacct", "-a", "-X", "-n", "-P", "--units=M", "-o", ",".join(fields)]
    out = subprocess.run(sacct, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.stdout.splitlines()]
    return [r for r in rows if comment_part in r["Comment"]]


def predictions(run: Path, stack: str) -> list[dict]:
    """Everything a prediction row holds except wall-clock timings and memory readings."""
    path = run / f"results/predictions/demo/{stack}/passkey-2k.jsonl"
    return [{k: v for k, v in json.loads(x).items() if k not in READINGS} for x in path.read_text().splitlines()]


def test_workflow_on_slurm_survives_a_killed_inference_job(tmp_path):
    run = workdir(tmp_path, "slurm", CONFIG)
    first = snakemake(run, "--profile", str(PROFILE), *FAST_POLLING)
    partial = run / f"{KILLED}.partial"
    deadline = time.monotonic() + 600
    while lines(partial) < 2:  # the job is mid-run: some samples written, not all
        if first.poll() is not None or time.monotonic() > deadline:
            pytest.fail(finish(first, 1)[1][-4000:])
        time.sleep(0.1)
    queue = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True, timeout=30)
    running = dict(line.split("|") for line in queue.stdout.split())
    [job_id] = [j for j, comment in running.items() if comment == f"rule_inference_wildcards_{WILDCARDS}"]
    # Kill the job's inference process, as the kernel's OOM killer or a node fault would. (`scancel`
    # would leave the state "CANCELLED by <uid>", which snakemake-executor-plugin-slurm 2.8.0 does not
    # recognize as a failure: it keeps waiting for the job.)
    pids = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True, timeout=30).stdout
    [pid] = [p for p in (x.split()[0] for x in pids.splitlines()[1:]) if "inference.py" in cmdline(p)]
    os.kill(int(pid), signal.SIGKILL)
    rc, out = finish(first)
    assert rc != 0, out[-4000:]
    done_before = lines(partial)
    assert 2 <= done_before < SAMPLES and not (run / KILLED).exists()
    assert "Error in rule inference" in out

    rc, out = finish(snakemake(run, "--profile", str(PROFILE), *FAST_POLLING))
    assert rc == 0, out[-4000:]
    log = (run / "results/logs/inference/demo/baseline.log").read_text()
    assert f"{done_before} of {SAMPLES} samples already done" in log
    assert not partial.exists() and lines(run / KILLED) == SAMPLES
    assert (run / "results/tables/summary.md").is_file() and (run / "results/plots/scores.png").is_file()
    assert "Nothing to be done" in finish(snakemake(run, "--profile", str(PROFILE), *FAST_POLLING))[1]

    # The accounting database saw every job: the killed one, and everything else completed.
    inference = slurm_jobs(f"rule_inference_wildcards_{WILDCARDS}")
    assert [j["State"] for j in inference] == ["FAILED", "COMPLETED"]
    assert inference[0]["JobID"] == job_id
    # the profile's memory and time limit
    assert float(inference[1]["ReqMem"].rstrip("M")) == 64000 and inference[1]["Timelimit"] == "1-00:00:00"
    for rule in ["dataset", "prompts", "score", "aggregate", "plots"]:
        jobs = slurm_jobs(f"rule_{rule}")
        assert jobs and all(j["State"] == "COMPLETED" and j["ExitCode"] == "0:0" for j in jobs), jobs
    # one SLURM log per job, kept after success
    assert len(list((run / "results/logs/slurm/rule_inference").rglob("*.log"))) == 3

    # The resumed run gives exactly what an uninterrupted local run gives.
    local = workdir(tmp_path, "local", CONFIG)
    rc, out = finish(snakemake(local, "--cores", "2"))
    assert rc == 0, out[-4000:]
    for stack in CONFIG["stacks"]:
        assert predictions(run, stack) == predictions(local, stack)
        summary = f"results/scores/demo/{stack}/passkey-2k.summary.json"
        slurm_summary, local_summary = (json.loads((r / summary).read_text()) for r in (run, local))
        slurm_summary.pop("system"), local_summary.pop("system")  # timings
        assert slurm_summary == local_summary


GPU_SNAKEFILE = """
rule all:
    input:
        "gpu.txt",


rule gpu_job:
    output:
        "gpu.txt",
    resources:
        gpu=2,
    shell:
        "scontrol show job $SLURM_JOB_ID > {output}"
"""


def test_a_rule_declaring_gpus_gets_them_from_slurm(tmp_path):
    """rules declare `gpu: N`; through the profile SLURM allocates N GPUs (a gres without devices here)."""
    (tmp_path / "Snakefile").write_text(GPU_SNAKEFILE)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(PROFILE), *FAST_POLLING],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "gres/gpu=2" in (tmp_path / "gpu.txt").read_text()
    [job] = slurm_jobs("rule_gpu_job")
    assert job["State"] == "COMPLETED" and "gres/gpu=2" in job["AllocTRES"]
