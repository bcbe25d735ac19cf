"""GPU slot assignment, on a faked device list (no GPU needed)."""

import multiprocessing as mp
import os
import signal
import time

import pytest

from lcopt.gpus import claim


def _hold(slots_dir, devices, n, queue, hold_s):
    with claim(n, slots_dir, devices, timeout_s=30, poll_s=0.05) as chosen:
        queue.put((os.getpid(), chosen, os.environ["CUDA_VISIBLE_DEVICES"]))
        time.sleep(hold_s)


def test_concurrent_jobs_get_distinct_devices(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    devices = ["0", "1", "2", "3"]
    procs = [ctx.Process(target=_hold, args=(tmp_path, devices, n, queue, 1.0)) for n in (1, 1, 2)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join()
    claimed = [d for _, chosen, _ in got for d in chosen]
    assert sorted(claimed) == devices  # 1 + 1 + 2 slots, no device twice
    for _, chosen, env in got:
        assert env == ",".join(chosen)


def test_a_job_waits_for_a_free_slot_and_a_killed_holder_frees_it(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    holder = ctx.Process(target=_hold, args=(tmp_path, ["7"], 1, queue, 60))
    holder.start()
    assert queue.get(timeout=30)[1] == ["7"]
    with pytest.raises(TimeoutError), claim(1, tmp_path, ["7"], timeout_s=0.5, poll_s=0.05):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with claim(1, tmp_path, ["7"], timeout_s=5, poll_s=0.05) as chosen:
        assert chosen == ["7"]


def test_restores_the_environment_and_rejects_impossible_requests(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    with claim(1, tmp_path) as chosen:
        assert chosen == ["2"] and os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,5"
    with pytest.raises(RuntimeError, match="needs 3 GPU"), claim(3, tmp_path):
        pass
    with claim(0, tmp_path) as chosen:
        assert chosen == [] and os.environ["CUDA_VISIBLE_DEVICES"] == "2,5"


def test_a_slurm_job_uses_its_allocated_devices_without_locks(tmp_path, monkeypatch):
    """Two SLURM jobs on one node may both see their own GPU as device 0: neither may wait for the other."""
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with claim(1, tmp_path, timeout_s=1) as first, claim(1, tmp_path, timeout_s=1) as second:
        assert first == second == ["0"]
    assert not list(tmp_path.iterdir())  # no lock files
    with pytest.raises(RuntimeError, match="needs 2 GPU"), claim(2, tmp_path):
        pass


def test_jobs_per_gpu_shares_a_device_and_says_so(tmp_path, monkeypatch):
    """LCOPT_JOBS_PER_GPU=2: two jobs hold device 0 at once, a third waits; each exports the sharing."""
    monkeypatch.setenv("LCOPT_JOBS_PER_GPU", "2")
    with claim(1, tmp_path, ["0"], timeout_s=1) as first, claim(1, tmp_path, ["0"], timeout_s=1) as second:
        assert first == second == ["0"] and os.environ["LCOPT_GPU_SHARED_BY"] == "2"
        with pytest.raises(TimeoutError), claim(1, tmp_path, ["0"], timeout_s=0.3, poll_s=0.05):
            pass
    assert "LCOPT_GPU_SHARED_BY" not in os.environ
    with pytest.raises(RuntimeError, match="needs 2 GPU"), claim(2, tmp_path, ["0"]):
        pass  # two slots of one device are not two GPUs
    monkeypatch.setenv("LCOPT_JOBS_PER_GPU", "0")
    with pytest.raises(ValueError, match="LCOPT_JOBS_PER_GPU"), claim(1, tmp_path, ["0"]):
        pass
