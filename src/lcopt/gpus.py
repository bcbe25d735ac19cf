"""GPU slots for local runs: each job gets its own GPU(s) through CUDA_VISIBLE_DEVICES.

Snakemake's `--resources gpu=N` caps how many GPUs concurrent jobs ask for, but cannot tell a local
job *which* GPU it got. lcopt answers that with one lock file per device in a shared folder: a job
takes `flock` on as many free devices as it needs and exports only those. The kernel drops the
locks when the process ends, however it ends (a SIGKILL included), so a slot can never leak.

Inside a SLURM job (`SLURM_JOB_ID` set) the scheduler has already given the job its own devices in
CUDA_VISIBLE_DEVICES; jobs on one node may all see theirs as device 0, so no locks are taken there.

`LCOPT_JOBS_PER_GPU=k` (default 1) gives each device k slots, so k jobs share one GPU (with
`--resources gpu=<k x GPUs>`). That is for throughput on small models whose decode is bound by kernel
latency (run NVIDIA's MPS daemon so that their kernels overlap): their per-token times are then not
a latency measurement, and each job exports `LCOPT_GPU_SHARED_BY=k` so that the predictions say so.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def default_slots_dir() -> Path:
    """Machine-wide (GPUs are), per user, and on local disk (flock is unreliable on network file systems)."""
    return Path(tempfile.gettempdir()) / f"lcopt-gpu-slots-{os.getuid()}"


SHARED_BY_ENV = "LCOPT_GPU_SHARED_BY"


def jobs_per_gpu() -> int:
    """Slots per device (`LCOPT_JOBS_PER_GPU`, default 1)."""
    text = os.environ.get("LCOPT_JOBS_PER_GPU", "1")
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"LCOPT_JOBS_PER_GPU={text!r}: must be a positive integer (jobs that share one GPU)")
    return value


def visible_devices() -> list[str]:
    """The devices this process may use: CUDA_VISIBLE_DEVICES if set, else every GPU nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
    )
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


@contextlib.contextmanager
def claim(
    n: int,
    slots_dir: Path | None = None,
    devices: Sequence[str] | None = None,
    timeout_s: float = 600.0,
    poll_s: float = 0.5,
) -> Iterator[list[str]]:
    """Hold `n` free devices and export them as CUDA_VISIBLE_DEVICES for the duration of the block (a free
    slot of each, with `LCOPT_JOBS_PER_GPU` > 1; never two slots of one device)."""
    if n <= 0:
        yield []
        return
    devices = list(visible_devices() if devices is None else devices)
    if n > len(devices):
        raise RuntimeError(f"job needs {n} GPU(s) but only {len(devices)} are visible: {devices}")
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        log.info("SLURM job %s: GPU(s) %s allocated by the scheduler", os.environ["SLURM_JOB_ID"], devices)
        yield devices
        return
    slots_dir = Path(slots_dir) if slots_dir else default_slots_dir()
    slots_dir.mkdir(parents=True, exist_ok=True)
    per_gpu = jobs_per_gpu()
    slots = [(device, k) for k in range(per_gpu) for device in devices]  # spread jobs over devices first
    held: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            for device, k in slots:
                if len(held) == n:
                    break
                if any(d == device for d, _ in held):
                    continue
                name = f"gpu-{device}.lock" if k == 0 else f"gpu-{device}.slot{k}.lock"
                fd = os.open(slots_dir / name, os.O_CREAT | os.O_RDWR, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                held.append((device, fd))
            if len(held) == n:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {n} free GPU slot(s) among {devices} after {timeout_s:.0f} s")
            time.sleep(poll_s)
        chosen = [d for d, _ in held]
        previous = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", SHARED_BY_ENV)}
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
        if per_gpu > 1:
            os.environ[SHARED_BY_ENV] = str(per_gpu)
        log.info("GPU slot(s) %s (of %s, %d job(s) per GPU)", chosen, devices, per_gpu)
        try:
            yield chosen
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        for _, fd in held:
            os.close(fd)  # closing drops the flock
